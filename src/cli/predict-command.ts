/**
 * `gradfleet predict --model FILE [IMAGE...] [--index N,N,...]`: what a saved
 * model says about PNG images (scaled and centred the MNIST way, see
 * ../viz/digit-image.ts) and about examples of the test set.
 *
 * Images come first, in argument order, then the test examples in `--index`
 * order. Text output is one line per input; `--json` prints one JSON object
 * per line (JSON Lines) per input:
 * `{"source", "predicted", "outputs": [10 numbers]}`, plus `"index"` and
 * `"label"` for a test example, so a stream of them can be read line by line.
 */
import { loadDataset } from "../core/data/index.js";
import { loadModel, type Model } from "../core/model-file.js";
import { argmax, Network } from "../core/network.js";
import { readDigitImage } from "../viz/digit-image.js";
import { type PredictOptions, UsageError } from "./options.js";

/** One input to predict: its pixels (bytes) and where they came from. */
export interface PredictInput {
  /** The image path, or `test[N]` for a test example. */
  source: string;
  pixels: Uint8Array;
  /** Test-set index, for `--index` inputs. */
  index?: number;
  /** The test-set label, for `--index` inputs. */
  label?: number;
}

/** What the model says about one input. */
export interface Prediction {
  source: string;
  /** Arg-max of the outputs. */
  predicted: number;
  /** The output layer's activations. */
  outputs: number[];
  index?: number;
  label?: number;
}

/**
 * Runs the model forward on every input (in one batch) and returns one
 * prediction per input, in order.
 */
export function predict(model: Model, inputs: readonly PredictInput[]): Prediction[] {
  const nIn = model.spec.layers[0];
  const nOut = model.spec.layers[model.spec.layers.length - 1];
  const pixels = new Uint8Array(inputs.length * nIn);
  inputs.forEach((input, r) => {
    if (input.pixels.length !== nIn) {
      throw new Error(`${input.source}: ${input.pixels.length} pixels, the model takes ${nIn} inputs`);
    }
    pixels.set(input.pixels, r * nIn);
  });
  const acts = new Network(model.spec).activations(model.params, pixels, inputs.length);
  const out = acts[acts.length - 1];
  return inputs.map((input, r) => {
    const outputs = Array.from(out.subarray(r * nOut, (r + 1) * nOut));
    const p: Prediction = { source: input.source, predicted: argmax(outputs, 0, nOut), outputs };
    if (input.index !== undefined) p.index = input.index;
    if (input.label !== undefined) p.label = input.label;
    return p;
  });
}

/** Runs `predict`; returns the exit code. */
export async function runPredictCommand(o: PredictOptions, images: readonly string[]): Promise<number> {
  const indices = o.index ?? [];
  if (images.length === 0 && indices.length === 0) {
    throw new UsageError("predict: give at least one IMAGE (a PNG file) or --index N,N,... of the test set");
  }
  const model = await loadModel(o.model);
  const nIn = model.spec.layers[0];
  const inputs: PredictInput[] = [];

  if (images.length > 0) {
    const side = Math.round(Math.sqrt(nIn));
    if (side * side !== nIn) {
      throw new UsageError(
        `--model: ${o.model} takes ${nIn} inputs, not a square image, so it cannot read PNG images; use --index`,
        { flag: "--model" },
      );
    }
    for (const path of images) {
      const { pixels } = await readDigitImage(path, side);
      inputs.push({ source: path, pixels });
    }
  }

  if (indices.length > 0) {
    const data = await loadDataset({ dir: o.data });
    const test = data.test;
    if (test.pixels !== nIn) {
      throw new UsageError(
        `--model: ${o.model} takes ${nIn} inputs, the images of ${data.source} have ${test.pixels} pixels`,
        { flag: "--model" },
      );
    }
    for (const i of indices) {
      if (i >= test.n) {
        throw new UsageError(
          `--index: ${i} is past the end of the test set of ${data.source} (${test.n} examples, 0 to ${test.n - 1})`,
          {
            flag: "--index",
          },
        );
      }
      inputs.push({
        source: `test[${i}]`,
        pixels: test.images.subarray(i * nIn, (i + 1) * nIn),
        index: i,
        label: test.labels[i],
      });
    }
  }

  const lines = predict(model, inputs).map((p) => (o.json ? JSON.stringify(p) : textLine(p)));
  process.stdout.write(`${lines.join("\n")}\n`);
  return 0;
}

/** `digit.png: 7  outputs 0:0.0012 1:0.0003 ...`, with the label of a test example. */
function textLine(p: Prediction): string {
  const label = p.label !== undefined ? ` (label ${p.label}${p.label === p.predicted ? "" : ", WRONG"})` : "";
  const outputs = p.outputs.map((v, j) => `${j}:${v.toFixed(4)}`).join(" ");
  return `${p.source}: ${p.predicted}${label}  outputs ${outputs}`;
}
