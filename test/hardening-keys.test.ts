/**
 * The run's keys vanish or are overwritten under a live run (issue: FLUSHALL,
 * DEL or SET of the spec, SET of the version): the run must neither hang nor
 * lose work. Steps do not go through Redis, so the run goes on; the
 * coordinator publishes the spec again (and its seats and lease), so that a
 * worker that joins afterwards can still take part. Real processes, a private
 * redis-server; progress is read from Redis and the coordinator's log, never
 * from the clock.
 */
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runKeys } from "../src/shared/keys.js";
import { decodeRunSpec } from "../src/shared/run-spec.js";
import { logRecords, waitFor } from "./helpers/cli.js";
import { startTestRedis, type TestRedis } from "./helpers/redis.js";
import { SLOW_TRAIN, slowRun } from "./helpers/slow-run.js";
import { Tracked } from "./helpers/tracked.js";

const EPOCHS = 8;
const RUN = slowRun(EPOCHS, 500);

const procs = new Tracked();
let redis: TestRedis;
let baseline: Record<string, unknown>;

beforeAll(async () => {
  redis = await startTestRedis();
  const r = await procs.run(["train", ...RUN, "--workers", "0"]);
  expect(r.code, r.stderr).toBe(0);
  baseline = r.json!;
});

afterAll(async () => {
  await procs.killAll();
  await redis?.stop();
});

describe("the run's keys under a live run", () => {
  it("FLUSHALL, then garbage in the spec and the version: the run goes on, the spec comes back, a worker joining later finishes it with the same bits", async () => {
    const runId = "keys-flushed";
    const keys = runKeys(runId);
    const args = ["--redis-url", redis.url, "--run-id", runId, "--metrics-port", "0"];
    const client = new Redis(redis.url);
    const first = procs.start(["worker", ...args, "--worker-id", "before"]);
    const coord = procs.start(["coordinator", ...RUN, ...args, "--step-timeout", "5"]);
    try {
      await waitFor(
        async () => coord.child.exitCode !== null || Number(await client.get(keys.version)) >= 5,
        120_000,
      );
      expect(coord.child.exitCode).toBeNull();
      await client.flushall();
      await client.set(keys.spec, "garbage");
      await client.set(keys.version, "garbage");
      // The only worker goes: the rest of the run needs one that joins after
      // the flush, through a spec and a seat published again.
      first.child.kill("SIGKILL");
      await first.done;
      await waitFor(
        () =>
          logRecords(coord.stderr(), "the run spec in Redis was overwritten; publishing it again").length > 0,
        60_000,
      );
      const spec = await client.get(keys.spec);
      expect(decodeRunSpec(spec!).config.epochs).toBe(EPOCHS);
      const late = procs.start(["worker", ...args, "--worker-id", "after"]);
      const r = await coord.done;
      late.child.kill("SIGTERM");
      await late.done;
      expect(r.code, r.stderr).toBe(0);
      expect(r.json!.weightsSha256).toBe(baseline.weightsSha256);
      expect(r.json!.samples).toBe(EPOCHS * SLOW_TRAIN);
      expect(r.json!.workersSeen).toBe(2);
    } finally {
      client.disconnect();
    }
  }, 600_000);
});
