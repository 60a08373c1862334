/**
 * Divergence: a learning rate far too high makes the gradient non-finite.
 * In one process and on the cluster (where the coordinator first rejects the
 * non-finite result and has the shard recomputed, and stops when the
 * recompute is non-finite again), the run stops with exit code 3, a message
 * that names the step and suggests a lower learning rate, and a usable
 * checkpoint of the last good weights — the same bits either way.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadCheckpoint } from "../src/core/checkpoint.js";
import { startTestRedis, type TestRedis } from "./helpers/redis.js";
import { Tracked } from "./helpers/tracked.js";

// ReLU hidden layers with softmax/cross-entropy at lr 1000 overflow within a
// few steps (sigmoid/quadratic only saturates: its gradient stays finite).
const DIVERGES = [
  "--activation",
  "relu",
  "--output",
  "softmax",
  "--cost",
  "cross-entropy",
  "--lr",
  "1000",
  "--train-limit",
  "2000",
  "--test-limit",
  "500",
  "--epochs",
  "1",
  "--json",
];

const procs = new Tracked();
let redis: TestRedis;
let dir: string;

beforeAll(async () => {
  redis = await startTestRedis();
  dir = await mkdtemp(join(tmpdir(), "gf-diverge-"));
});

afterAll(async () => {
  await procs.killAll();
  await redis?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** The 1-based step named by the divergence message; checks the message too. */
function divergedStep(stderr: string): number {
  const m =
    /training diverged at epoch 1 step (\d+): the gradient is not finite.*try a lower --lr \(now 1000\)/.exec(
      stderr,
    );
  expect(m, stderr).not.toBeNull();
  return Number(m![1]);
}

/** Loads the checkpoint and checks it holds the finite weights from before step `step` (1-based). */
async function usableCheckpoint(ckptDir: string, step: number): Promise<Float32Array> {
  const c = await loadCheckpoint(ckptDir);
  expect(c.reason).toBe("diverged");
  expect(c.state.epoch).toBe(0);
  expect(c.state.step).toBe(step - 1);
  expect(c.state.updates).toBe(step - 1);
  expect(c.config.optimizer.lr).toBe(1000);
  expect(c.state.params.every(Number.isFinite)).toBe(true);
  expect(c.state.opt.every(Number.isFinite)).toBe(true);
  return c.state.params;
}

describe("divergence", () => {
  it("stops with exit code 3, names the step, suggests a lower --lr, leaves the same usable checkpoint in-process and on the cluster", async () => {
    const local = join(dir, "local");
    const a = await procs.run(["train", ...DIVERGES, "--workers", "0", "--checkpoint-dir", local]);
    expect(a.code, a.stderr).toBe(3);
    const step = divergedStep(a.stderr);
    expect(a.stderr).toContain(join(local, "checkpoint.safetensors"));
    const localParams = await usableCheckpoint(local, step);

    const cluster = join(dir, "cluster");
    const b = await procs.run([
      "train",
      ...DIVERGES,
      "--workers",
      "2",
      "--redis-url",
      redis.url,
      "--metrics-port",
      "0",
      "--checkpoint-dir",
      cluster,
    ]);
    expect(b.code, b.stderr).toBe(3);
    // Deterministic: the cluster diverges at the same step, with the same last good weights.
    expect(divergedStep(b.stderr)).toBe(step);
    const clusterParams = await usableCheckpoint(cluster, step);
    expect(Buffer.from(clusterParams.buffer).equals(Buffer.from(localParams.buffer))).toBe(true);
    // The first non-finite result was refused and its shard recomputed; the
    // recompute was non-finite again, which stopped the run.
    const refusedNonFinite = b.stderr.split("\n").filter((l) => l.includes('"reason":"non_finite"')).length;
    const again = b.stderr
      .split("\n")
      .filter((l) => l.includes("non-finite gradient again after a recompute")).length;
    console.log(
      `[faults] divergence --lr 1000: in-process exit ${a.code}, cluster exit ${b.code}, both at epoch 1 step ${step}; ` +
        `cluster refused ${refusedNonFinite} non-finite result(s), ${again} non-finite again after recompute; ` +
        `checkpoint at update ${step - 1}, finite, same bits in both`,
    );
    expect(refusedNonFinite).toBeGreaterThanOrEqual(1);
    expect(again).toBeGreaterThanOrEqual(1);
    // The worker log level is warn under train; nothing else failed.
    expect(b.stderr).not.toMatch(/exited \(|Error:/);
  });
});
