/**
 * Redis stopped and restarted (empty, same port) in the middle of a run: the
 * coordinator and workers reconnect, the coordinator publishes the spec,
 * weights and pending shards again, and the run ends with the right bits.
 */
import { Redis } from "ioredis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { runKeys } from "../src/shared/keys.js";
import { runCli, SMALL_RUN, startCli, stopCli, waitFor } from "./helpers/cli.js";
import { startTestRedis, type TestRedis } from "./helpers/redis.js";

const RUN = SMALL_RUN;

let redis: TestRedis;
beforeAll(async () => {
  redis = await startTestRedis();
});
afterAll(async () => {
  await redis?.stop();
});

it("a run survives Redis restarting empty on the same port, with the same bits", async () => {
  if (!redis.restart) {
    console.log("skipped: this Redis (REDIS_URL) cannot be restarted by the test");
    return;
  }
  const baseline = await runCli(["train", ...RUN, "--workers", "0"]);
  expect(baseline.code, baseline.stderr).toBe(0);
  const runId = "restart";
  const args = ["--redis-url", redis.url, "--run-id", runId, "--metrics-port", "0"];
  const workers = [1, 2].map((i) => startCli(["worker", ...args, "--worker-id", `w${i}`]));
  const coord = startCli(["coordinator", ...RUN, ...args, "--step-timeout", "3"]);
  const client = new Redis(redis.url, { maxRetriesPerRequest: 1, retryStrategy: () => 100 });
  client.on("error", () => {});
  try {
    await waitFor(async () => Number(await client.get(runKeys(runId).version).catch(() => 0)) >= 40, 60_000);
    await redis.restart();
    const restartedAt = Number(await client.get(runKeys(runId).version).catch(() => null));
    const r = await coord.done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.json!.weightsSha256).toBe(baseline.json!.weightsSha256);
    expect(r.json!.samples).toBe(2 * 6000);
    console.log(
      `redis restarted once mid-run (version right after: ${restartedAt}); retried shards ${r.json!.retriedShards}`,
    );
  } finally {
    client.disconnect();
    await stopCli(coord, "SIGKILL");
    await Promise.all(workers.map((w) => stopCli(w)));
  }
});
