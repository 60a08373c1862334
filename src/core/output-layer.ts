/**
 * The output layer's side of the reference kernel (network.ts): the cost of
 * each example, and dC/dz of the output layer that backpropagation starts
 * from, for every pairing of output activation and cost. Kept apart from
 * the Network class so the class is the passes and this is the calculus;
 * the arithmetic (and so the bits) is the same as when it was inline.
 */
import type { ModelSpec } from "./spec.js";

/**
 * Writes dC/dz of the output layer for rows `idx[start..start+rows)` into
 * `d` (CHUNK rows, `nOut` wide), from the output activations `a`.
 */
export function outputDeltas(
  spec: ModelSpec,
  a: Float64Array,
  d: Float64Array,
  labels: Uint8Array,
  idx: Uint32Array,
  start: number,
  rows: number,
  nOut: number,
): void {
  const { output, cost } = spec;
  for (let r = 0; r < rows; r++) {
    const o = r * nOut;
    const label = labels[idx[start + r]];
    if (cost === "cross-entropy") {
      // For sigmoid + binary cross-entropy and softmax + categorical
      // cross-entropy alike, dC/dz simplifies to a - y.
      for (let j = 0; j < nOut; j++) d[o + j] = a[o + j] - (j === label ? 1 : 0);
    } else if (output === "sigmoid") {
      // Quadratic cost C = sum (a - y)^2: dC/da = 2 (a - y), da/dz = a (1 - a).
      for (let j = 0; j < nOut; j++) {
        const aj = a[o + j];
        d[o + j] = 2 * (aj - (j === label ? 1 : 0)) * aj * (1 - aj);
      }
    } else {
      // Quadratic cost through softmax: dC/dz_i = a_i (g_i - sum_j a_j g_j), g = 2 (a - y).
      let dot = 0;
      for (let j = 0; j < nOut; j++) dot += a[o + j] * 2 * (a[o + j] - (j === label ? 1 : 0));
      for (let j = 0; j < nOut; j++) {
        const g = 2 * (a[o + j] - (j === label ? 1 : 0));
        d[o + j] = a[o + j] * (g - dot);
      }
    }
  }
}

/**
 * Summed per-example cost of rows `idx[start..start+rows)`, from the output
 * activations `a` and pre-activations `z`, in row order.
 */
export function outputCost(
  spec: ModelSpec,
  a: Float64Array,
  z: Float64Array,
  labels: Uint8Array,
  idx: Uint32Array,
  start: number,
  rows: number,
  nOut: number,
): number {
  let total = 0;
  for (let r = 0; r < rows; r++) {
    const o = r * nOut;
    const label = labels[idx[start + r]];
    total += exampleCost(spec, a, z, o, nOut, label);
  }
  return total;
}

/** Per-example cost from the output activations `a` and pre-activations `z` at offset o. */
export function exampleCost(
  spec: ModelSpec,
  a: ArrayLike<number>,
  z: ArrayLike<number>,
  o: number,
  nOut: number,
  label: number,
): number {
  let c = 0;
  if (spec.cost === "quadratic") {
    for (let j = 0; j < nOut; j++) {
      const e = a[o + j] - (j === label ? 1 : 0);
      c += e * e;
    }
  } else if (spec.output === "softmax") {
    // -ln softmax(z)_label = logsumexp(z) - z_label, computed stably.
    let m = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < nOut; j++) if (z[o + j] > m) m = z[o + j];
    let s = 0;
    for (let j = 0; j < nOut; j++) s += Math.exp(z[o + j] - m);
    c = m + Math.log(s) - z[o + label];
  } else {
    // Binary cross-entropy per output from z: -ln σ(z) = softplus(-z), -ln(1-σ(z)) = softplus(z).
    for (let j = 0; j < nOut; j++) c += softplus(j === label ? -z[o + j] : z[o + j]);
  }
  return c;
}

/** ln(1 + e^x) without overflow. */
export function softplus(x: number): number {
  return x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x));
}
