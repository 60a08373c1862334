/**
 * The quick start's private Redis: when nothing answers at REDIS_URL and
 * `redis-server` is on PATH, `train --workers N` starts one on a free
 * loopback port for the run (no persistence, noeviction) and stops it at
 * the end.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { connectRedis, redactUrl, waitForRedis } from "./redis.js";

/** A Redis that a run can use, and how to let go of it. */
export interface RedisForRun {
  url: string;
  /** True when this process started it. */
  started: boolean;
  stop(): Promise<void>;
}

/** A TCP port free on 127.0.0.1 a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Whether a Redis answers PING at `url` within `timeoutMs`: undefined when it
 * does, else the error. Authentication errors are thrown.
 */
export async function redisProblem(
  url: string,
  timeoutMs: number,
  caFile?: string,
): Promise<Error | undefined> {
  const client = connectRedis(url, { role: "producer", caFile });
  try {
    await waitForRedis(client, timeoutMs);
    return undefined;
  } catch (e) {
    if (/WRONGPASS|NOAUTH|NOPERM/.test((e as Error).message)) throw e;
    return e as Error;
  } finally {
    client.disconnect();
  }
}

/** Whether a Redis answers PING at `url` within `timeoutMs`. Authentication errors are thrown. */
export async function redisAnswers(url: string, timeoutMs: number, caFile?: string): Promise<boolean> {
  return (await redisProblem(url, timeoutMs, caFile)) === undefined;
}

/**
 * The settings of a Redis that lives for one run or test: nothing kept on
 * disk, and writes refused rather than keys evicted when memory is full (a
 * lost key would be a lost step).
 */
export const EPHEMERAL_REDIS_ARGS: readonly string[] = [
  "--save",
  "",
  "--appendonly",
  "no",
  "--maxmemory-policy",
  "noeviction",
];

/** Starts `redis-server` on a free loopback port; resolves once it answers. */
export async function startPrivateRedis(binary = "redis-server"): Promise<RedisForRun> {
  const port = await freePort();
  const child: ChildProcess = spawn(
    binary,
    ["--port", String(port), "--bind", "127.0.0.1", ...EPHEMERAL_REDIS_ARGS],
    { stdio: "ignore" },
  );
  const failed = new Promise<never>((_, reject) => {
    child.once("error", (e) => reject(new Error(`cannot start ${binary}: ${e.message}`)));
    child.once("exit", (code) => reject(new Error(`${binary} exited with code ${code} before answering`)));
  });
  const url = `redis://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    await gone;
  };
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const ok = await Promise.race([redisAnswers(url, 500), failed]);
    if (ok) return { url, started: true, stop };
  }
  await stop();
  throw new Error(`${binary} did not answer on port ${port} within 10 s`);
}

/**
 * The Redis at `url` if it answers. Where nothing listens and the URL points
 * at this machine, a private one (when `redis-server` exists). Anything else
 * (a remote host down, a TLS or certificate problem) is an error: silently
 * training against another Redis than the one configured would hide it.
 */
export async function ensureRedis(
  url: string,
  caFile: string | undefined,
  onStart: (msg: string) => void,
): Promise<RedisForRun> {
  const problem = await redisProblem(url, 1500, caFile);
  if (!problem) return { url, started: false, stop: async () => {} };
  const host = new URL(url).hostname;
  const local = ["127.0.0.1", "localhost", "[::1]", "::1"].includes(host);
  const nobodyListens = /ECONNREFUSED|no answer within/.test(problem.message);
  if (!local || !nobodyListens) throw problem;
  try {
    const r = await startPrivateRedis();
    onStart(
      `no Redis answered at ${redactUrl(url)}; started a private redis-server at ${r.url} for this run`,
    );
    return r;
  } catch (e) {
    throw new Error(
      `no Redis answers at ${redactUrl(url)} and a private one could not be started (${(e as Error).message}); ` +
        "set REDIS_URL or install redis-server",
    );
  }
}
