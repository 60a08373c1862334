/**
 * Inputs for the kernel tests (fast-kernel.test.ts, native-kernel.test.ts):
 * MNIST-like sparse data, parameters that leave the linear region, a
 * shuffled order, every activation/output/cost combination of some shapes.
 */
import type { Dataset } from "../../src/core/dataset.js";
import { Rng } from "../../src/core/prng.js";
import { layoutOf, type ModelSpec } from "../../src/core/spec.js";

/** Random bytes, 4 in 5 of them zero (MNIST is ~81% zeros), labels in [0, classes). */
export function sparseData(pixels: number, n: number, classes: number, seed: number): Dataset {
  const rng = new Rng(seed, 7);
  const images = new Uint8Array(n * pixels);
  for (let i = 0; i < images.length; i++) images[i] = rng.nextInt(5) === 0 ? 1 + rng.nextInt(255) : 0;
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) labels[i] = rng.nextInt(classes);
  return { n, pixels, rows: 1, cols: pixels, images, labels };
}

/** Parameters large enough that units leave the linear region and ReLUs switch off. */
export function randomParams(spec: ModelSpec, seed: number): Float32Array {
  const rng = new Rng(seed);
  const params = new Float32Array(layoutOf(spec.layers).size);
  const scale = Math.sqrt(8 / spec.layers[0]);
  for (let i = 0; i < params.length; i++) params[i] = rng.nextNormal() * scale;
  return params;
}

/** A shuffled order of n examples. */
export function shuffled(n: number): Uint32Array {
  const idx = new Uint32Array(n);
  for (let i = 0; i < n; i++) idx[i] = (i * 7) % n;
  return idx;
}

/** A float32 array's bytes, in hex: equal strings are equal bits. */
export const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString("hex");

/** Every hidden × output × cost combination of each layer list. */
export function combosOf(shapes: number[][]): ModelSpec[] {
  const combos: ModelSpec[] = [];
  for (const layers of shapes) {
    for (const hidden of ["sigmoid", "relu"] as const) {
      for (const output of ["sigmoid", "softmax"] as const) {
        for (const cost of ["quadratic", "cross-entropy"] as const)
          combos.push({ layers, hidden, output, cost });
      }
    }
  }
  return combos;
}
