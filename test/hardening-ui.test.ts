/**
 * The live page against clients that misbehave (issue 14, item 4, and the
 * nosniff header of item 10): half-sent requests past the descriptor limit
 * of a real training process, stream clients that never read, more streams
 * than a page needs, `HEAD /events`. The run must keep its checkpoint and
 * model whatever the page receives.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { request } from "node:http";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { CHECKPOINT_FILE } from "../src/core/checkpoint.js";
import { initParams } from "../src/core/init.js";
import { loadModel } from "../src/core/model-file.js";
import type { RunConfig } from "../src/core/run-config.js";
import { MAX_STREAM_CLIENTS } from "../src/ui/limits.js";
import { type LivePage, startLivePage } from "../src/ui/server.js";
import { BIN, waitFor } from "./helpers/cli.js";
import { freePort } from "./helpers/redis.js";
import { stepInfo } from "./helpers/step-info.js";

/** A wide first layer: 256 tiles of 784 weights, about 1 MB a frame, so a client that does not read falls behind fast. */
const CONFIG: RunConfig = {
  spec: { layers: [784, 256, 10], hidden: "sigmoid", output: "sigmoid", cost: "quadratic" },
  optimizer: { name: "sgd", lr: 1.5, momentum: 0.9, weightDecay: 0 },
  epochs: 1,
  batch: 10,
  shards: 1,
  seed: 7,
  kernel: "ref",
};

/** Raw sockets a test opened; destroyed after it. */
const sockets: Socket[] = [];
function rawSocket(port: number, text: string): Socket {
  const s = connect(port, "127.0.0.1");
  s.on("error", () => {}); // resets are expected: the server drops these clients
  s.write(text);
  sockets.push(s);
  return s;
}

/** Status and headers of one request (the body is read and discarded). */
function head(
  url: string,
  method: string,
  headers: Record<string, string> = {},
  body?: Buffer,
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; ended: boolean }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, ended: true }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

describe("the live page server against misbehaving clients", () => {
  let page: LivePage | undefined;
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    await page?.close();
    page = undefined;
  });

  it("answers HEAD /events with the stream's headers and ends it, without making it a stream client", async () => {
    page = await startLivePage({ host: "127.0.0.1", port: 0, config: CONFIG, workers: "in-process" });
    const r = await head(`${page.url}events`, "HEAD");
    expect(r).toMatchObject({ status: 200, ended: true });
    expect(r.headers["content-type"]).toMatch(/^text\/event-stream/);
    expect(page.streams).toBe(0);
  });

  it("says X-Content-Type-Options: nosniff on every text and JSON response", async () => {
    page = await startLivePage({ host: "127.0.0.1", port: 0, config: CONFIG, workers: "in-process" });
    const cases: [string, string, Record<string, string>, Buffer | undefined, number][] = [
      ["nope", "GET", {}, undefined, 404],
      ["", "POST", {}, undefined, 405],
      ["predict", "GET", {}, undefined, 405],
      ["predict", "POST", { "Content-Type": "application/octet-stream" }, Buffer.alloc(784), 503],
      ["predict", "POST", { "Content-Type": "application/octet-stream" }, Buffer.alloc(3), 400],
      ["predict", "POST", { "Content-Type": "application/octet-stream" }, Buffer.alloc(10_000_000), 413],
      ["", "GET", { Host: "evil.example" }, undefined, 403],
      ["events", "HEAD", {}, undefined, 200],
      ["", "GET", {}, undefined, 200],
    ];
    for (const [path, method, headers, body, status] of cases) {
      const r = await head(`${page.url}${path}`, method, headers, body).catch((e: Error) => {
        throw new Error(`${method} /${path}: ${e.message}`);
      });
      expect(r.status, `${method} /${path}`).toBe(status);
      expect(r.headers["x-content-type-options"], `${method} /${path} (${status})`).toBe("nosniff");
    }
  });

  it(`serves at most ${MAX_STREAM_CLIENTS} streams; the next is told 503 and the stream count stays there`, async () => {
    page = await startLivePage({ host: "127.0.0.1", port: 0, config: CONFIG, workers: "in-process" });
    for (let i = 0; i < MAX_STREAM_CLIENTS; i++)
      rawSocket(page.port, "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    await waitFor(() => page!.streams === MAX_STREAM_CLIENTS);
    const extra = await head(`${page.url}events`, "GET");
    expect(extra.status).toBe(503);
    expect(extra.headers["x-content-type-options"]).toBe("nosniff");
    expect(page.streams).toBe(MAX_STREAM_CLIENTS);
  });

  it("drops stream clients that never read; a client that reads keeps its stream", async () => {
    page = await startLivePage({ host: "127.0.0.1", port: 0, config: CONFIG, workers: "in-process" });
    const params = initParams(CONFIG.spec, 7);
    let updates = 1;
    page.observer.onStep!(stepInfo(params, updates, 1000));
    const stalled = [0, 1, 2].map(() => {
      const s = rawSocket(page!.port, "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
      s.pause(); // never reads: what it is sent piles up in the kernel, then in the server
      return s;
    });
    // A reading client, as the page in a browser is.
    const reading = await fetch(`${page.url}events`);
    const reader = reading.body!.getReader();
    let received = 0;
    const drain = (async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        received += value.length;
      }
    })();
    // New weights all the time: about 2 MB a second to each stream.
    const feeder = setInterval(() => page?.observer.onStep?.(stepInfo(params, ++updates, 1000)), 50);
    try {
      // (A paused socket does not read, so it would not see its own end: count on the server's side.)
      await waitFor(() => page!.droppedStreams === stalled.length, 150_000);
    } finally {
      clearInterval(feeder);
    }
    expect(page.droppedStreams).toBe(3);
    expect(page.streams).toBe(1);
    expect(received).toBeGreaterThan(1_000_000);
    console.log(
      `live page: 3 stalled stream clients dropped after ${updates} weight versions; the reading client got ${received} bytes and kept its stream`,
    );
    await page.close();
    page = undefined;
    await drain;
  }, 300_000);
});

describe("a training run whose live page is flooded", () => {
  let child: ChildProcess | undefined;
  afterAll(() => {
    for (const s of sockets.splice(0)) s.destroy();
    if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });

  it("keeps its checkpoint and model: half-sent requests past `ulimit -n 256` are refused, then time out", async () => {
    const dir = await mkdtemp(join(tmpdir(), "gf-harden-ui-"));
    const port = await freePort();
    const ck = join(dir, "ck");
    const out = join(dir, "m.safetensors");
    // Full MNIST for 1000 epochs (hours): it is still training when SIGTERM ends it, however slow the machine.
    const args = [
      "train",
      "--epochs",
      "1000",
      "--ui-port",
      String(port),
      "--checkpoint-dir",
      ck,
      "--checkpoint-every",
      "100",
      "--out",
      out,
      "--json",
    ];
    child = spawn("sh", ["-c", 'ulimit -n 256 && exec "$@"', "sh", process.execPath, BIN, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d) => {
      stdout += d;
    });
    child.stderr!.on("data", (d) => {
      stderr += d;
    });
    const exited = new Promise<number | null>((resolve) => child!.on("close", (code) => resolve(code)));
    // Bounds for a loaded machine, not expectations of speed: the checks are what each wait is for.
    // Training has started (and its signal handlers are in place) once a checkpoint exists.
    await waitFor(() => stderr.includes("live page at") && existsSync(join(ck, CHECKPOINT_FILE)), 150_000);

    // 400 requests that never finish their headers: more than the 256 descriptors the process has.
    const FLOOD = 400;
    let closed = 0;
    let connected = 0;
    for (let i = 0; i < FLOOD; i++) {
      const s = rawSocket(port, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
      s.on("connect", () => connected++);
      s.on("close", () => closed++);
    }
    // The page holds at most 256 - 128 of them; the rest are closed at once.
    await waitFor(() => connected === FLOOD && closed >= FLOOD - 128, 150_000);
    const closedAtOnce = closed;
    // The ones it holds time out: the page answers again, the run still going.
    await waitFor(async () => {
      try {
        return (await head(`http://127.0.0.1:${port}/`, "GET")).status === 200;
      } catch {
        return false;
      }
    }, 150_000);
    expect(child.exitCode).toBeNull();
    child.kill("SIGTERM");
    const code = await exited;
    expect(code, stderr).toBe(130);
    expect(stderr).not.toMatch(/EMFILE/);
    expect(existsSync(join(ck, CHECKPOINT_FILE))).toBe(true);
    const summary = JSON.parse(stdout.trim().split("\n").pop()!);
    const model = await loadModel(out);
    expect(model.info.weightsSha256).toBe(summary.weightsSha256);
    console.log(
      `live page flood: ${FLOOD} half-sent requests against ulimit -n 256: ${closedAtOnce} closed at once, ${FLOOD - closedAtOnce} held until their header timeout; checkpoint and model written, exit 130`,
    );
  }, 600_000);
});
