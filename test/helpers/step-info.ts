/** What the trainer reports after an update, made up for tests of its observers. */
import type { StepInfo } from "../../src/core/trainer.js";

/** Update number `updates` (1-based) of an epoch of `stepsPerEpoch` steps of batch 10, with the given weights. */
export function stepInfo(params: Float32Array, updates: number, stepsPerEpoch: number): StepInfo {
  return {
    epoch: 0,
    step: updates - 1,
    stepsPerEpoch,
    updates,
    loss: 0.5,
    samples: updates * 10,
    batchSamples: 10,
    timing: { compute: 0.001, communication: 0, update: 0, total: 0.001 },
    params,
  };
}
