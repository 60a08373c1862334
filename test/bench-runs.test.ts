import { describe, expect, it } from "vitest";
import { parseWorkerCounters, promValue, steadyRate } from "../bench/runs.js";

describe("bench run helpers", () => {
  it("read a worker's compute and used shards from its Prometheus text", () => {
    const text = [
      "# HELP gradfleet_worker_shards_total Shard jobs handled, by outcome",
      'gradfleet_worker_shards_total{outcome="ok",worker="w1"} 360',
      'gradfleet_worker_shards_total{outcome="duplicate",worker="w1"} 2',
      'gradfleet_worker_shard_compute_seconds_bucket{le="0.001",worker="w1"} 334',
      'gradfleet_worker_shard_compute_seconds_sum{worker="w1"} 0.295',
      'gradfleet_worker_shard_compute_seconds_count{worker="w1"} 362',
    ].join("\n");
    expect(parseWorkerCounters(text)).toEqual({ computeSeconds: 0.295, shardsOk: 360 });
    expect(promValue(text, "gradfleet_worker_shards_total", 'outcome="duplicate"')).toBe(2);
    // A name that is only the start of another one does not match it.
    expect(promValue(text, "gradfleet_worker_shard")).toBeNaN();
    expect(promValue("up 1\n", "up")).toBe(1);
  });

  it("take the samples/s of epochs 2..E from the cumulative rates of the epoch lines", () => {
    // 1000 examples an epoch: epoch 1 took 1 s (rate 1000), epochs 2 and 3 took 0.25 s each.
    const stdout = [
      "epoch 1/3: train cost 0.9, test accuracy 10.00% (1/10), test cost 0.9, 1000 samples/s",
      "epoch 2/3: train cost 0.8, test accuracy 20.00% (2/10), test cost 0.8, 1600 samples/s",
      "epoch 3/3: train cost 0.7, test accuracy 30.00% (3/10), test cost 0.7, 2000 samples/s",
      '{"steps":3}',
    ].join("\n");
    expect(steadyRate(stdout, 1000, 3)).toBeCloseTo(4000, 6);
    expect(() => steadyRate(stdout, 1000, 4)).toThrow(/no epoch lines/);
  });
});
