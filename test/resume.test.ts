/**
 * Checkpoint and resume: a coordinator SIGKILLed mid-epoch and started again
 * with --resume ends with the same weights as a run that was never
 * interrupted; so does in-process training stopped by SIGINT and resumed.
 */
import { mkdtemp, readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { loadCheckpoint } from "../src/core/checkpoint.js";
import { runKeys } from "../src/shared/keys.js";
import { runCli, SMALL_RUN, startCli, stopCli, waitFor } from "./helpers/cli.js";
import { startTestRedis, type TestRedis } from "./helpers/redis.js";

const RUN = SMALL_RUN;

let redis: TestRedis;
let baseline: Record<string, unknown>;
beforeAll(async () => {
  redis = await startTestRedis();
  const r = await runCli(["train", ...RUN, "--workers", "0"]);
  expect(r.code, r.stderr).toBe(0);
  baseline = r.json!;
});
afterAll(async () => {
  await redis?.stop();
});

it("coordinator SIGKILL mid-epoch, then --resume: same weightsSha256 as uninterrupted", async () => {
  const dir = await mkdtemp(join(tmpdir(), "gf-resume-"));
  const runId = "resume";
  const args = ["--redis-url", redis.url, "--run-id", runId, "--metrics-port", "0"];
  const ck = ["--checkpoint-dir", dir, "--checkpoint-every", "25"];
  const workers = [1, 2].map((i) => startCli(["worker", ...args, "--worker-id", `w${i}`]));
  const client = new Redis(redis.url);
  try {
    const first = startCli(["coordinator", ...RUN, ...args, ...ck]);
    // Past the first checkpoint (update 25 of 188; 94 steps an epoch). The
    // version in Redis trails the run by up to 0.1 s, so how far the run got
    // before the kill depends on the machine's speed: the test asserts only
    // that the newest checkpoint is one of the run's (every 25 updates, or
    // an epoch's end) short of its end, and that resuming from it gives the
    // same bits.
    await waitFor(async () => Number(await client.get(runKeys(runId).version)) >= 30, 60_000);
    first.child.kill("SIGKILL");
    await first.done;
    const saved = await loadCheckpoint(dir);
    expect(saved.state.updates).toBeGreaterThanOrEqual(25);
    expect(saved.state.updates).toBeLessThan(2 * 94);
    expect(saved.state.updates % 25 === 0 || saved.state.step === 0).toBe(true);
    const second = await runCli(["coordinator", ...RUN, ...args, ...ck, "--resume"]);
    expect(second.code, second.stderr).toBe(0);
    // No temporary file left next to the checkpoint: write-then-rename, and a
    // kill that landed mid-write leaves one that the next write removes.
    expect((await readdir(dir)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    expect(second.json!.resumedFrom).toEqual({ epoch: saved.state.epoch, step: saved.state.step });
    expect(second.json!.weightsSha256).toBe(baseline.weightsSha256);
    expect(second.json!.samples).toBe(2 * 6000);
  } finally {
    client.disconnect();
    await Promise.all(workers.map((w) => stopCli(w)));
  }
});

it("in-process training stopped by SIGINT says how to resume, and resuming gives the same bits", async () => {
  const dir = await mkdtemp(join(tmpdir(), "gf-resume-local-"));
  const ck = ["--checkpoint-dir", dir, "--checkpoint-every", "10", "--workers", "0"];
  // Slow it down enough to be interrupted: the reference kernel, batch 1 steps.
  const slow = [
    "--train-limit",
    "6000",
    "--test-limit",
    "1000",
    "--epochs",
    "2",
    "--batch",
    "4",
    "--shards",
    "2",
    "--kernel",
    "ref",
    "--json",
  ];
  const ref = await runCli(["train", ...slow, "--workers", "0"]);
  const run = startCli(["train", ...slow, ...ck]);
  await waitFor(async () => (await readdir(dir)).includes("checkpoint.safetensors"), 60_000);
  const stopped = await stopCli(run, "SIGINT");
  expect(stopped.code).toBe(130);
  expect(stopped.stderr).toMatch(/resume with: .*--resume --checkpoint-dir/);
  const resumed = await runCli(["train", ...slow, ...ck, "--resume"]);
  expect(resumed.code, resumed.stderr).toBe(0);
  expect(resumed.json!.weightsSha256).toBe(ref.json!.weightsSha256);
  expect(resumed.json!.samples).toBe(2 * 6000);
});

it("--resume with other flags than the checkpoint's is refused, naming what differs", async () => {
  const dir = await mkdtemp(join(tmpdir(), "gf-resume-bad-"));
  const small = [
    "--train-limit",
    "600",
    "--test-limit",
    "100",
    "--epochs",
    "1",
    "--batch",
    "64",
    "--workers",
    "0",
  ];
  const r = await runCli(["train", ...small, "--checkpoint-dir", dir]);
  expect(r.code, r.stderr).toBe(0);
  const bad = await runCli(["train", ...small, "--lr", "0.5", "--checkpoint-dir", dir, "--resume"]);
  expect(bad.code).toBe(2);
  expect(bad.stderr).toMatch(/--resume: .*different config \(optimizer differ\)/);
});

it("a coordinator asked to stop while no worker is alive gives the step up, checkpoints and exits", async () => {
  const dir = await mkdtemp(join(tmpdir(), "gf-stop-"));
  const runId = "lonely";
  const client = new Redis(redis.url);
  try {
    const coord = startCli([
      "coordinator",
      ...RUN,
      "--redis-url",
      redis.url,
      "--run-id",
      runId,
      "--metrics-port",
      "0",
      "--step-timeout",
      "1",
      "--checkpoint-dir",
      dir,
    ]);
    await waitFor(async () => (await client.exists(runKeys(runId).spec)) === 1, 30_000);
    const r = await stopCli(coord, "SIGTERM");
    expect(r.code).toBe(130);
    expect(r.stderr).toMatch(/stopped at epoch 1 step 0; resume with: .*--resume --checkpoint-dir/);
    const saved = await loadCheckpoint(dir);
    expect(saved.state.updates).toBe(0);
    // --resume before any checkpoint exists starts a new run (restartable deployments pass it always).
    const fresh = await mkdtemp(join(tmpdir(), "gf-fresh-"));
    const small = [
      "--train-limit",
      "600",
      "--test-limit",
      "100",
      "--epochs",
      "1",
      "--batch",
      "64",
      "--workers",
      "0",
      "--json",
    ];
    const r2 = await runCli(["train", ...small, "--checkpoint-dir", fresh, "--resume"]);
    expect(r2.code, r2.stderr).toBe(0);
    expect(r2.stderr).toMatch(/no checkpoint in .* yet; starting a new run/);
    expect(r2.json!.resumedFrom).toBeNull();
  } finally {
    client.disconnect();
  }
});
