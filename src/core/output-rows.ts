/**
 * The output layer of the float32 kernels (fast and native): softmax, dC/dz
 * and the cost of a block of rows, computed in float64 from the float32
 * pre-activations and activations, with Math.exp and Math.log as the
 * reference kernel. Both kernels call these same functions on their own
 * memory, so that their bits agree: a C port of exp and log would have to
 * match V8's to the last bit on every machine.
 */
import { softplus } from "./output-layer.js";
import type { ModelSpec } from "./spec.js";

/**
 * Where a block's output-layer rows are in a float32 memory: row r's
 * pre-activations at `z + r * stride`, activations at `a + r * stride`,
 * deltas at `d + r * stride` (indices in floats).
 */
export interface OutputRows {
  readonly spec: ModelSpec;
  /** Output units. */
  readonly nOut: number;
  /** Floats per row (nOut rounded up to the kernel's vector width). */
  readonly stride: number;
  readonly z: number;
  readonly a: number;
  readonly d: number;
}

/** Output activations = softmax of the pre-activations, row by row, in float64. */
export function softmax(o: OutputRows, f32: Float32Array, rows: number): void {
  const { nOut, stride } = o;
  for (let r = 0; r < rows; r++) {
    const z = o.z + r * stride;
    const a = o.a + r * stride;
    let m = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < nOut; j++) if (f32[z + j] > m) m = f32[z + j];
    let s = 0;
    for (let j = 0; j < nOut; j++) s += Math.exp(f32[z + j] - m);
    for (let j = 0; j < nOut; j++) f32[a + j] = Math.exp(f32[z + j] - m) / s;
  }
}

/**
 * Sets the output layer's deltas dC/dz of `rows` rows and returns `total`
 * plus their costs, added one by one in row order (so a caller that passes
 * the running total of a chunk gets the chunk's sum in the same order
 * whatever blocks it is computed in).
 *
 * @param f32 the memory the rows are in, after the forward pass
 * @param labels the dataset's labels; row r is example idx[s + r]
 */
export function outputDelta(
  o: OutputRows,
  f32: Float32Array,
  labels: Uint8Array,
  idx: Uint32Array,
  s: number,
  rows: number,
  total = 0,
): number {
  const { nOut, stride } = o;
  const { output, cost } = o.spec;
  for (let r = 0; r < rows; r++) {
    const label = labels[idx[s + r]];
    const a = o.a + r * stride;
    const d = o.d + r * stride;
    if (cost === "quadratic" && output === "sigmoid") {
      // C = sum (a - y)^2: dC/da = 2 (a - y), da/dz = a (1 - a).
      for (let j = 0; j < nOut; j++) {
        const aj = f32[a + j];
        const e = aj - (j === label ? 1 : 0);
        total += e * e;
        f32[d + j] = 2 * e * aj * (1 - aj);
      }
      continue;
    }
    if (cost === "cross-entropy") {
      // Sigmoid + binary and softmax + categorical cross-entropy alike: dC/dz = a - y.
      for (let j = 0; j < nOut; j++) f32[d + j] = f32[a + j] - (j === label ? 1 : 0);
    } else {
      // Quadratic through softmax: dC/dz_i = a_i (g_i - sum_j a_j g_j), g = 2 (a - y).
      let dot = 0;
      for (let j = 0; j < nOut; j++) dot += f32[a + j] * 2 * (f32[a + j] - (j === label ? 1 : 0));
      for (let j = 0; j < nOut; j++)
        f32[d + j] = f32[a + j] * (2 * (f32[a + j] - (j === label ? 1 : 0)) - dot);
    }
    total += exampleCost(o, f32, r, label);
  }
  return total;
}

/** Cost of row r (as network.ts exampleCost, from the float32 outputs). */
export function exampleCost(o: OutputRows, f32: Float32Array, r: number, label: number): number {
  const { nOut, stride } = o;
  const a = o.a + r * stride;
  const z = o.z + r * stride;
  let c = 0;
  if (o.spec.cost === "quadratic") {
    for (let j = 0; j < nOut; j++) {
      const e = f32[a + j] - (j === label ? 1 : 0);
      c += e * e;
    }
  } else if (o.spec.output === "softmax") {
    // -ln softmax(z)_label = logsumexp(z) - z_label.
    let m = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < nOut; j++) if (f32[z + j] > m) m = f32[z + j];
    let s = 0;
    for (let j = 0; j < nOut; j++) s += Math.exp(f32[z + j] - m);
    c = m + Math.log(s) - f32[z + label];
  } else {
    for (let j = 0; j < nOut; j++) c += softplus(j === label ? -f32[z + j] : f32[z + j]);
  }
  return c;
}

/** Index of row r's largest activation (the first of equals): the predicted class. */
export function predicted(o: OutputRows, f32: Float32Array, r: number): number {
  const a = o.a + r * o.stride;
  let best = 0;
  for (let j = 1; j < o.nOut; j++) if (f32[a + j] > f32[a + best]) best = j;
  return best;
}
