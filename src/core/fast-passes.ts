/**
 * The fast kernel's passes over a chunk of gathered rows (fast-kernel.ts):
 * forward through every layer, the output layer's deltas and cost, and
 * backward through every layer. Each layer's products and activations are
 * calls into the WebAssembly kernel (wasm/kernel.wat) on the workspace's
 * tensors (fast-workspace.ts); the output layer's delta and the cost are
 * computed here in float64 from the float32 outputs (Math.exp for softmax
 * and cross-entropy, as the reference kernel).
 *
 * Each function takes the workspace, the instance's exports and/or a float32
 * view of the memory the workspace is in, and the chunk: no state of its own.
 */
import type { Workspace } from "./fast-workspace.js";
import { softplus } from "./network.js";
import type { KernelExports } from "./wasm/module.js";

/**
 * Forward pass of the gathered rows: activations of every layer (and the
 * output pre-activations).
 *
 * @param ws the workspace, whose rowPtr points at the chunk's `rows` examples
 * @param w the kernel instance's exports
 * @param f32 a float32 view of the whole memory (for softmax)
 */
export function forward(ws: Workspace, w: KernelExports, f32: Float32Array, rows: number): void {
  const L = ws.nLayers;
  const px = ws.spec.layers[0];
  w.scan(rows, ws.rowPtr, px, ws.pad[0].nOutP * 4, ws.start, ws.idx, ws.val, ws.scale, ws.pix, ws.cursor);
  for (let l = 0; l < L; l++) {
    const P = ws.pad[l];
    const last = l === L - 1;
    const z = last ? ws.zOut : ws.acts[l + 1];
    if (l === 0) w.sparse_fwd(rows, ws.start, ws.idx, ws.val, P.w, P.nOutP, P.b, z);
    else w.dense_fwd(rows, ws.acts[l], P.nInP, P.nIn, P.w, P.nOutP, P.b, z);
    const n = rows * P.nOutP;
    if (!last) {
      if (ws.spec.hidden === "relu") w.relu(z, z, n);
      else w.sigmoid(z, z, n, ws.consts);
    } else if (ws.spec.output === "sigmoid") {
      w.sigmoid(ws.acts[L], z, n, ws.consts);
    } else {
      softmax(ws, f32, rows);
    }
  }
}

/** Output activations = softmax of the pre-activations, row by row, in float64. */
function softmax(ws: Workspace, f32: Float32Array, rows: number): void {
  const { nOut, nOutP } = ws.pad[ws.nLayers - 1];
  for (let r = 0; r < rows; r++) {
    const z = (ws.zOut >> 2) + r * nOutP;
    const a = (ws.acts[ws.nLayers] >> 2) + r * nOutP;
    let m = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < nOut; j++) if (f32[z + j] > m) m = f32[z + j];
    let s = 0;
    for (let j = 0; j < nOut; j++) s += Math.exp(f32[z + j] - m);
    for (let j = 0; j < nOut; j++) f32[a + j] = Math.exp(f32[z + j] - m) / s;
  }
}

/**
 * Sets the output layer's deltas dC/dz and returns the rows' summed cost.
 *
 * @param ws the workspace, after {@link forward} of the chunk
 * @param f32 a float32 view of the whole memory
 * @param labels the dataset's labels; row r is example idx[s + r]
 */
export function outputDelta(
  ws: Workspace,
  f32: Float32Array,
  labels: Uint8Array,
  idx: Uint32Array,
  s: number,
  rows: number,
): number {
  const { nOut, nOutP } = ws.pad[ws.nLayers - 1];
  const { output, cost } = ws.spec;
  let total = 0;
  for (let r = 0; r < rows; r++) {
    const label = labels[idx[s + r]];
    const a = (ws.acts[ws.nLayers] >> 2) + r * nOutP;
    const d = (ws.deltas[ws.nLayers] >> 2) + r * nOutP;
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
    total += exampleCost(ws, f32, r, label);
  }
  return total;
}

/**
 * Cost of gathered row r (as network.ts exampleCost, from the float32 outputs).
 *
 * @param ws the workspace, after {@link forward} of the chunk
 * @param f32 a float32 view of the whole memory
 */
export function exampleCost(ws: Workspace, f32: Float32Array, r: number, label: number): number {
  const { nOut, nOutP } = ws.pad[ws.nLayers - 1];
  const a = (ws.acts[ws.nLayers] >> 2) + r * nOutP;
  const z = (ws.zOut >> 2) + r * nOutP;
  let c = 0;
  if (ws.spec.cost === "quadratic") {
    for (let j = 0; j < nOut; j++) {
      const e = f32[a + j] - (j === label ? 1 : 0);
      c += e * e;
    }
  } else if (ws.spec.output === "softmax") {
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

/**
 * Backward pass: accumulates every layer's dW, db (into the workspace's
 * gradient region) and propagates the deltas down.
 *
 * @param ws the workspace, after {@link outputDelta} of the chunk
 * @param w the kernel instance's exports
 */
export function backward(ws: Workspace, w: KernelExports, rows: number): void {
  for (let l = ws.nLayers - 1; l >= 0; l--) {
    const P = ws.pad[l];
    const d = ws.deltas[l + 1];
    if (l === 0) {
      const px = ws.spec.layers[0];
      // Wide layers sort the entries by pixel first: the sort costs about as
      // much as one 16-output block of sparse_dw, and then every block sums
      // in registers instead of loading and storing dW once per entry.
      if (ws.csc) {
        w.csc(rows, ws.start, ws.pix, ws.val, px, ws.cursor, ws.cstart, ws.crow, ws.cval, P.nOutP * 4);
        w.sparse_dw_csc(px, ws.cstart, ws.crow, ws.cval, d, P.nOutP, P.gw);
      } else w.sparse_dw(rows, ws.start, ws.idx, ws.val, d, P.nOutP, P.gw);
      w.bias_dw(rows, d, P.nOutP, P.gb);
      break;
    }
    if (w.all_finite(d, rows * P.nOutP)) {
      w.dense_dw(rows, ws.acts[l], P.nInP, P.nIn, d, P.nOutP, P.gw);
      w.bias_dw(rows, d, P.nOutP, P.gb);
    } else {
      // A non-finite delta (a diverging run): the skipping kernel keeps 0 · ∞ out, as the reference.
      w.dense_dw_skip(rows, ws.acts[l], P.nInP, P.nIn, d, P.nOutP, P.gw, P.gb);
    }
    // delta_prev = (W · delta) ⊙ act'(a_prev): the forward product over the transposed weights.
    w.dense_fwd(rows, d, P.nOutP, P.nOut, P.wt, P.nInP, ws.zeros, ws.deltas[l]);
    if (ws.spec.hidden === "relu") w.drelu(ws.deltas[l], ws.acts[l], rows * P.nInP);
    else w.dsigmoid(ws.deltas[l], ws.acts[l], rows * P.nInP);
  }
}
