/**
 * A full Redis (`maxmemory 2mb`, `maxmemory-policy noeviction`, filled up):
 * every write is refused with "OOM command not allowed". A worker must back
 * off instead of spinning (it was 100 % CPU and tens of thousands of log
 * lines in seconds), say in one line what is wrong and which settings to
 * change, and take a seat once Redis has room again; a coordinator must exit
 * with that line instead of Redis's raw text.
 */
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runFlags, stopCli, waitFor } from "./helpers/cli.js";
import { startTestRedis, type TestRedis } from "./helpers/redis.js";
import { Tracked } from "./helpers/tracked.js";

const RUN = runFlags({ train: 1000, test: 100, epochs: 1, batch: 100, shards: 2 });
/** How long the worker is watched against the full Redis. */
const WATCH_MS = 5000;
/**
 * Most log lines the worker may write in that time: generous (backing off
 * from 1 s doubling gives 3 or 4 in 5 s); without back-off it was tens of
 * thousands.
 */
const MOST_LINES = 40;
/** What the one line must name: the setting to raise, and the policy to keep. */
const FULL_LINE = /Redis at redis:\/\/\S+ is full: .*maxmemory .*maxmemory-policy noeviction/;

const procs = new Tracked();
let redis: TestRedis;
let client: Redis;
let fillers = 0;

beforeAll(async () => {
  redis = await startTestRedis({ maxmemory: "2mb" });
  client = new Redis(redis.url);
  // Fill it until it refuses writes.
  const blob = "x".repeat(100_000);
  for (;;) {
    try {
      await client.set(`filler:${fillers}`, blob);
      fillers++;
    } catch (e) {
      expect((e as Error).message).toMatch(/^OOM command not allowed/);
      break;
    }
    if (fillers > 1000) throw new Error("Redis never filled up: is maxmemory set?");
  }
});

afterAll(async () => {
  await procs.killAll();
  client?.disconnect();
  await redis?.stop();
});

/** The log lines (one JSON object each) of a stderr. */
function lines(stderr: string): string[] {
  return stderr.split("\n").filter((l) => l.trim() !== "");
}

describe("a full Redis", () => {
  it("a worker backs off and says once per wait what to change; a coordinator exits with that line; both recover", async () => {
    const args = ["--redis-url", redis.url, "--run-id", "full", "--metrics-port", "0"];
    const worker = procs.start(["worker", ...args, "--worker-id", "w"]);
    try {
      await waitFor(
        () => worker.stderr().includes('"msg":"worker ready"') || worker.child.exitCode !== null,
        60_000,
      );
      expect(worker.child.exitCode, worker.stderr()).toBeNull();
      const before = lines(worker.stderr()).length;
      await new Promise((r) => setTimeout(r, WATCH_MS));
      const written = lines(worker.stderr()).slice(before);
      console.log(`[hardening] worker against a full Redis: ${written.length} log lines in ${WATCH_MS} ms`);
      expect(written.length).toBeLessThanOrEqual(MOST_LINES);
      const full = lines(worker.stderr()).filter((l) => FULL_LINE.test(l));
      expect(full.length).toBeGreaterThanOrEqual(1);
      // Waiting is right for a worker (someone may give Redis room): it stays up.
      expect(worker.child.exitCode).toBeNull();

      const c = await procs.run(["coordinator", ...RUN, ...args]);
      expect(c.code).not.toBe(0);
      const said = lines(c.stderr).filter((l) => !l.startsWith("{"));
      expect(said.join("\n")).toMatch(FULL_LINE);
      expect(c.stderr).not.toContain("OOM command not allowed");

      // Room again: the worker takes a seat after its wait, and the run trains.
      const filled = Array.from({ length: fillers }, (_, i) => `filler:${i}`);
      await client.del(...filled);
      const ok = await procs.run(["coordinator", ...RUN, ...args]);
      expect(ok.code, ok.stderr).toBe(0);
      expect(ok.json!.workersSeen).toBe(1);
      const w = await stopCli(worker);
      expect(w.code, w.stderr).toBe(0);
    } finally {
      await stopCli(worker, "SIGKILL");
    }
  }, 300_000);
});
