/**
 * The fast kernel's passes over a chunk of gathered rows (fast-kernel.ts):
 * forward and backward through every layer. Each layer's products and
 * activations are calls into the WebAssembly kernel (wasm/kernel.wat) on the
 * workspace's tensors (fast-workspace.ts); softmax, the output layer's delta
 * and the cost are output-rows.ts's, shared with the native kernel.
 *
 * Each function takes the workspace, the instance's exports and/or a float32
 * view of the memory the workspace is in, and the chunk: no state of its own.
 */
import type { Workspace } from "./fast-workspace.js";
import { softmax } from "./output-rows.js";
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
      softmax(ws.out, f32, rows);
    }
  }
}

/**
 * Backward pass: accumulates every layer's dW, db (into the workspace's
 * gradient region) and propagates the deltas down.
 *
 * @param ws the workspace, after outputDelta (output-rows.ts) of the chunk
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
