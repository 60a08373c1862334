/**
 * The notes' math, one example at a time, in float64: the slow, obvious
 * backpropagation that the gradient-check tests verify against finite
 * differences and that the batched kernels are compared with.
 *
 * For one example with input a(0) and one-hot target y:
 *   z(l) = W(l) a(l-1) + b(l),  a(l) = σ(z(l))
 *   C0 = Σ_j (a_j(L) - y_j)^2            (quadratic; or cross-entropy)
 *   dC0/da(L) = 2 (a(L) - y)               (the notes write dC0/dw(L) here: a slip)
 *   dC0/dw_jk(l) = a_k(l-1) σ'(z_j(l)) dC0/da_j(l)
 *   dC0/da_k(l-1) = Σ_j w_jk(l) σ'(z_j(l)) dC0/da_j(l)
 * and the batch gradient is (1/n) Σ_{k=0}^{n-1} dC_k/dθ (the notes sum from 1: a slip).
 * Parameters use the flat layout of spec.ts (W input-major).
 */
import { exampleCost } from "./network.js";
import { layoutOf, type ModelSpec } from "./spec.js";

/** Forward pass of one example; returns activations a(0..L) and the output pre-activations. */
export function referenceForward(
  spec: ModelSpec,
  params: ArrayLike<number>,
  input: ArrayLike<number>,
): { acts: Float64Array[]; zOut: Float64Array } {
  const layout = layoutOf(spec.layers);
  const acts: Float64Array[] = [Float64Array.from(input)];
  let zOut = new Float64Array(0);
  layout.layers.forEach((L, l) => {
    const last = l === layout.layers.length - 1;
    const prev = acts[l];
    const z = new Float64Array(L.nOut);
    for (let j = 0; j < L.nOut; j++) {
      let s = params[L.b + j];
      for (let k = 0; k < L.nIn; k++) s += params[L.w + k * L.nOut + j] * prev[k];
      z[j] = s;
    }
    const a = new Float64Array(L.nOut);
    if (last && spec.output === "softmax") {
      const m = Math.max(...z);
      let sum = 0;
      for (let j = 0; j < L.nOut; j++) sum += Math.exp(z[j] - m);
      for (let j = 0; j < L.nOut; j++) a[j] = Math.exp(z[j] - m) / sum;
    } else if (!last && spec.hidden === "relu") {
      for (let j = 0; j < L.nOut; j++) a[j] = Math.max(0, z[j]);
    } else {
      for (let j = 0; j < L.nOut; j++) a[j] = 1 / (1 + Math.exp(-z[j]));
    }
    if (last) zOut = z;
    acts.push(a);
  });
  return { acts, zOut };
}

/** Cost of one example under float64 parameters. */
export function referenceCost(
  spec: ModelSpec,
  params: ArrayLike<number>,
  input: ArrayLike<number>,
  label: number,
): number {
  const { acts, zOut } = referenceForward(spec, params, input);
  const out = acts[acts.length - 1];
  return exampleCost(spec, out, zOut, 0, out.length, label);
}

/** Gradient of one example's cost by backpropagation, float64, flat layout. */
export function referenceGradient(
  spec: ModelSpec,
  params: ArrayLike<number>,
  input: ArrayLike<number>,
  label: number,
): Float64Array {
  const layout = layoutOf(spec.layers);
  const { acts } = referenceForward(spec, params, input);
  const grad = new Float64Array(layout.size);
  const nL = layout.layers.length;
  const out = acts[nL];
  const y = (j: number) => (j === label ? 1 : 0);
  // dC/da of the output layer, then through the output activation to dC/dz.
  let dz = new Float64Array(out.length);
  if (spec.cost === "quadratic") {
    const g = out.map((a, j) => 2 * (a - y(j)));
    if (spec.output === "sigmoid") {
      for (let j = 0; j < out.length; j++) dz[j] = g[j] * out[j] * (1 - out[j]);
    } else {
      // Softmax Jacobian: da_i/dz_j = a_i (δ_ij - a_j).
      for (let j = 0; j < out.length; j++) {
        let s = 0;
        for (let i = 0; i < out.length; i++) s += g[i] * out[i] * ((i === j ? 1 : 0) - out[j]);
        dz[j] = s;
      }
    }
  } else if (spec.output === "sigmoid") {
    // Binary cross-entropy: dC/da = (a - y) / (a (1 - a)); times σ' = a (1 - a).
    for (let j = 0; j < out.length; j++) dz[j] = out[j] - y(j);
  } else {
    for (let j = 0; j < out.length; j++) dz[j] = out[j] - y(j);
  }
  for (let l = nL - 1; l >= 0; l--) {
    const L = layout.layers[l];
    const prev = acts[l];
    for (let j = 0; j < L.nOut; j++) {
      grad[L.b + j] = dz[j];
      for (let k = 0; k < L.nIn; k++) grad[L.w + k * L.nOut + j] = prev[k] * dz[j];
    }
    if (l === 0) break;
    const dPrev = new Float64Array(L.nIn);
    for (let k = 0; k < L.nIn; k++) {
      let s = 0;
      for (let j = 0; j < L.nOut; j++) s += params[L.w + k * L.nOut + j] * dz[j];
      const a = prev[k];
      dPrev[k] = spec.hidden === "relu" ? (a > 0 ? s : 0) : s * a * (1 - a);
    }
    dz = dPrev;
  }
  return grad;
}
