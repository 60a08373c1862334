/**
 * `gradfleet evaluate --model FILE`: test accuracy and mean cost of a saved model.
 */
import { loadDataset } from "../core/data/index.js";
import { makeKernel } from "../core/kernel.js";
import { loadModel } from "../core/model-file.js";
import { weightsSha256 } from "../core/run-config.js";
import { type EvaluateOptions, UsageError } from "./options.js";

/** Runs `evaluate`; returns the exit code. */
export async function runEvaluateCommand(o: EvaluateOptions): Promise<number> {
  const model = await loadModel(o.model);
  const data = await loadDataset({ dir: o.data, testLimit: o.testLimit });
  const layers = model.spec.layers;
  if (layers[0] !== data.test.pixels) {
    throw new UsageError(
      `--model: ${o.model} takes ${layers[0]} inputs, the images of ${data.source} have ${data.test.pixels} pixels`,
      { flag: "--model" },
    );
  }
  // The kernel of training's epoch-end evaluations (core/trainer.ts): the score the run printed.
  const ev = makeKernel("fast", model.spec).evaluate(model.params, data.test);
  const sha = weightsSha256(model.params);
  if (o.json) {
    process.stdout.write(
      `${JSON.stringify({ testAccuracy: ev.accuracy, testCost: ev.cost, correct: ev.correct, n: ev.n, weightsSha256: sha, spec: model.spec })}\n`,
    );
  } else {
    process.stdout.write(
      `test accuracy ${(ev.accuracy * 100).toFixed(2)}% (${ev.correct}/${ev.n}), test cost ${ev.cost.toFixed(4)}\n`,
    );
  }
  return 0;
}
