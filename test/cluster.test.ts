/**
 * The cluster against a real Redis and real worker processes: the same bits
 * as in-process training for any number of workers, elastic workers, one
 * coordinator per run, cleanup. (Exactly once under duplicate and stale
 * results: faults-input.test.ts, which plays a rogue worker on the data port.)
 */
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runKeys } from "../src/shared/keys.js";
import { runCli, SMALL_RUN, startCli, stopCli, waitFor } from "./helpers/cli.js";
import { startTestRedis, type TestRedis } from "./helpers/redis.js";

const RUN = SMALL_RUN;
const SAMPLES = 2 * 6000;

let redis: TestRedis;
let baseline: Record<string, unknown>;

beforeAll(async () => {
  redis = await startTestRedis();
  const r = await runCli(["train", ...RUN, "--workers", "0"]);
  expect(r.code, r.stderr).toBe(0);
  baseline = r.json!;
  expect(baseline.samples).toBe(SAMPLES);
  expect(baseline.weightsSha256).toMatch(/^[0-9a-f]{64}$/);
});

afterAll(async () => {
  await redis?.stop();
});

describe("same bits as one process", () => {
  for (const workers of [1, 3]) {
    it(`train --workers ${workers}`, async () => {
      const r = await runCli(["train", ...RUN, "--workers", String(workers), "--redis-url", redis.url]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.json!.weightsSha256).toBe(baseline.weightsSha256);
      expect(r.json!.samples).toBe(SAMPLES);
      expect(r.json!.testAccuracy).toBe(baseline.testAccuracy);
      expect(r.json!.workersSeen).toBeGreaterThanOrEqual(1);
      expect(r.json!.workersSeen).toBeLessThanOrEqual(workers);
      expect(r.json!.rejectedResults).toBe(0);
      // On one host every worker that joined took the weights and left its
      // results in shared memory (--shm-dir /dev/shm); a slow one may join
      // after the short run is over.
      if (existsSync("/dev/shm")) {
        expect(r.json!.sharedMemoryWorkers).toBeGreaterThanOrEqual(r.json!.workersSeen as number);
        expect(r.json!.sharedMemoryWorkers).toBeLessThanOrEqual(workers);
        // One worker holds one range a step, and each result file is free
        // again before the next (the STEP headers say it was read): every
        // result comes through shared memory.
        if (workers === 1) expect(r.json!.sharedMemoryResults).toBe(r.json!.steps);
      }
    });
  }

  it("train --workers 2 --shm-dir none: everything over the data port, the same bits", async () => {
    const r = await runCli([
      "train",
      ...RUN,
      "--workers",
      "2",
      "--redis-url",
      redis.url,
      "--shm-dir",
      "none",
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json!.weightsSha256).toBe(baseline.weightsSha256);
    expect(r.json!.samples).toBe(SAMPLES);
    expect(r.json!.sharedMemoryWorkers).toBe(0);
    expect(r.json!.sharedMemoryResults).toBe(0);
  });

  it("a coordinator with separately started workers, and its keys and shared memory are gone afterwards", async () => {
    const runId = "separate";
    const shm = mkdtempSync(join(tmpdir(), "gf-shm-"));
    const w1 = startCli([
      "worker",
      "--redis-url",
      redis.url,
      "--run-id",
      runId,
      "--worker-id",
      "w1",
      "--metrics-port",
      "0",
    ]);
    const w2 = startCli([
      "worker",
      "--redis-url",
      redis.url,
      "--run-id",
      runId,
      "--worker-id",
      "w2",
      "--metrics-port",
      "0",
    ]);
    try {
      const r = await runCli([
        "coordinator",
        ...RUN,
        "--redis-url",
        redis.url,
        "--run-id",
        runId,
        "--metrics-port",
        "0",
        // Both workers in every step, however long either takes to load MNIST.
        "--min-workers",
        "2",
        "--shm-dir",
        shm,
      ]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.json!.weightsSha256).toBe(baseline.weightsSha256);
      expect(r.json!.samples).toBe(SAMPLES);
      expect(r.json!.workersSeen).toBe(2);
      expect(r.json!.sharedMemoryWorkers).toBe(2);
      // Both workers' results, every step (two ranges a step, each in a file).
      expect(r.json!.sharedMemoryResults).toBeGreaterThanOrEqual(r.json!.steps as number);
      // The session's directory (weights, result files, proof) went with the session.
      expect(readdirSync(shm)).toEqual([]);
      // The run's data is deleted. What may remain is bookkeeping of the
      // workers that stay attached to the queue waiting for the next run: the
      // live-workers set (it expires) and the seats queue's meta and stalled-check keys.
      const client = new Redis(redis.url);
      const keys = await client.keys(`gf:{${runId}}:*`);
      const idleWorkerKeys = /:(workers|seats:(meta|stalled-check))$/;
      expect(keys.filter((k) => !idleWorkerKeys.test(k))).toEqual([]);
      expect(await client.pttl(`gf:{${runId}}:workers`)).not.toBe(-1);
      client.disconnect();
    } finally {
      await Promise.all([stopCli(w1), stopCli(w2)]);
      rmSync(shm, { recursive: true, force: true });
    }
    // A worker serves one run after another: the same workers pass a second run.
  });
});

describe("elastic workers", () => {
  it("a worker that joins mid-run gets shards, one that leaves gracefully costs nothing", async () => {
    const runId = "elastic";
    // Long enough (1880 steps) that the run is still young when the test
    // first sees its version (written at most ten times a second), however
    // fast steps are.
    const epochs = "20";
    const args = ["--redis-url", redis.url, "--run-id", runId, "--metrics-port", "0"];
    const first = startCli(["worker", ...args, "--worker-id", "first"]);
    const coord = startCli(["coordinator", ...RUN, "--epochs", epochs, "--step-timeout", "120", ...args]);
    const client = new Redis(redis.url);
    const keys = runKeys(runId);
    let second: ReturnType<typeof startCli> | undefined;
    try {
      // Join once the run is under way (weights version = steps done). The
      // first worker is paused meanwhile, so that the run cannot end before
      // the second has loaded MNIST and joined (the step in hand waits for
      // the paused worker's range, well within --step-timeout: nothing is
      // sent again).
      await waitFor(async () => Number(await client.get(keys.version)) >= 30, 60_000);
      first.child.kill("SIGSTOP");
      second = startCli(["worker", ...args, "--worker-id", "second"]);
      await waitFor(() => /"worker":"second"[^\n]*"msg":"worker joined"/.test(coord.stderr()), 60_000);
      // The first goes on, and is stopped at once: it computes what it holds,
      // says it is leaving, and the second takes every later step.
      first.child.kill("SIGCONT");
      const firstExit = await stopCli(first, "SIGTERM");
      expect(firstExit.code, firstExit.stderr).toBe(0);
      const r = await coord.done;
      expect(r.code, r.stderr).toBe(0);
      expect(r.json!.workersSeen).toBe(2);
      expect(r.json!.samples).toBe(Number(epochs) * 6000);
      // Leaving gracefully, a worker computes what it was sent: no shard is sent again.
      expect(r.json!.retriedShards).toBe(0);
      // Bit-identical to in-process training of the same config.
      const ref = await runCli(["train", ...RUN, "--epochs", epochs, "--workers", "0"]);
      expect(r.json!.weightsSha256).toBe(ref.json!.weightsSha256);
    } finally {
      client.disconnect();
      first.child.kill("SIGCONT");
      await stopCli(first);
      if (second) await stopCli(second);
      await stopCli(coord);
    }
  });
});

describe("one coordinator per run", () => {
  it("a second coordinator for a live run id is refused with a clear message", async () => {
    const args = ["--redis-url", redis.url, "--run-id", "lease", "--metrics-port", "0"];
    // No workers: the first coordinator publishes the run and waits.
    const first = startCli(["coordinator", ...RUN, ...args]);
    try {
      const client = new Redis(redis.url);
      await waitFor(async () => (await client.exists(runKeys("lease").spec)) === 1, 30_000);
      client.disconnect();
      const second = await runCli(["coordinator", ...RUN, ...args]);
      expect(second.code).not.toBe(0);
      expect(second.stderr).toMatch(/already has a live coordinator/);
    } finally {
      await stopCli(first, "SIGKILL");
    }
  });
});
