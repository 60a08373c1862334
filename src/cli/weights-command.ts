/**
 * `gradfleet weights --model FILE --out weights.png`: the first hidden
 * layer's weights as a grid of tiles, one per neuron, with its bias under
 * each (see ../viz/weights-image.ts for the colours and scales).
 */
import { loadModel } from "../core/model-file.js";
import { writeFileAtomic } from "../core/write-atomic.js";
import { encodeRgbPng } from "../viz/png.js";
import { renderWeights } from "../viz/weights-image.js";
import type { WeightsOptions } from "./options.js";

/** Runs `weights`; returns the exit code. */
export async function runWeightsCommand(o: WeightsOptions): Promise<number> {
  const model = await loadModel(o.model);
  let img: ReturnType<typeof renderWeights>;
  try {
    img = renderWeights(model);
  } catch (e) {
    throw new Error(`${o.model}: ${(e as Error).message}`);
  }
  await writeFileAtomic(o.out, encodeRgbPng(img.width, img.height, img.rgb));
  const [rows, cols] = img.tileShape;
  process.stdout.write(
    `wrote ${o.out}: ${img.neurons} tiles of ${rows}x${cols} weights, ${img.columns} per row, ${img.width}x${img.height} pixels\n`,
  );
  return 0;
}
