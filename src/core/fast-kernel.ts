/**
 * The fast gradient kernel: the same contract as the reference kernel
 * (network.ts) — the float32 SUM of the per-example gradients of a shard, the
 * summed cost and the count — computed by WebAssembly SIMD (wasm/kernel.wat)
 * in float32.
 *
 * The pieces: fast-workspace.ts lays the tensors out in the kernel's
 * WebAssembly memory; fast-instance.ts holds that memory, the kernel's
 * instance over it and the resident pixels. This module runs the passes.
 *
 * How it is fast:
 * - Everything lives in one WebAssembly memory, sized once and never grown;
 *   the hot path allocates nothing.
 * - The training set's pixel bytes are resident in that memory, so a shard
 *   costs no per-example copying: the kernel reads the examples where they
 *   are. The loader puts training images into a WebAssembly memory of their
 *   own with room for a workspace in front (pixel-memory.ts): the kernel
 *   then instantiates itself on that memory and uses the pixels in place, so
 *   they are held once. Other datasets are copied into the kernel's own
 *   memory once (on the first gradSum that sees them), which costs their
 *   size once more (47 MB for MNIST); datasets over `maxResidentBytes` are
 *   instead copied example by example. Datasets are immutable in gradfleet;
 *   a dataset is recognised by its `images` array.
 *   A shard's examples are scattered over the dataset, so before the scan a
 *   pass of independent loads touches every cache line of them: the memory
 *   misses overlap instead of coming one row after another.
 * - The first layer is sparse: the input bytes are scanned 64 at a time and
 *   only nonzero pixels (~19% of MNIST) are multiplied, forward and backward.
 * - Weights are input-major (W[k, j]), so both products stream contiguous
 *   rows with f32x4 arithmetic, 16 or 24 outputs per pass held in registers
 *   (more would not fit the engine's sixteen vector registers). The block of
 *   outputs is the outer loop, so the slice of weights or deltas in use stays
 *   in the L1 cache.
 * - A wide first layer (32 outputs or more) sorts its sparse entries by pixel
 *   once per chunk (csc), so its dW sums in registers, each slice of dW read
 *   and written once instead of once per entry.
 * - Dense layers take two rows (forward) or two inputs (dW) per pass: each
 *   vector loaded serves twice, and eight accumulators hide the latency of
 *   the additions.
 * None of this changes a sum's order: every gradient has the bits it had
 * with one row and four outputs at a time.
 * - Layer widths are padded to a multiple of 4 inside the kernel's memory
 *   (zero weights in the padding), so any layer size works with whole vectors.
 *
 * Numerics: activations, deltas and the per-chunk gradient sums are float32;
 * a shard longer than one chunk (CHUNK examples) folds the chunk sums into a
 * float64 total, rounded to float32 once. The output layer's delta and the
 * cost are computed in float64 from the float32 outputs (Math.exp for
 * softmax and cross-entropy, as the reference). Every sum runs in a fixed
 * order, and WebAssembly's float ops are exactly specified, so the same
 * inputs give the same bits in every process. The bits differ from the
 * reference kernel's (float64) ones, within float32 rounding: a run must use
 * one kernel everywhere (it is part of the run config).
 */
import type { Dataset } from "./dataset.js";
import { FastInstance } from "./fast-instance.js";
import { loadParams, storeGrad, Workspace } from "./fast-workspace.js";
import type { Kernel } from "./kernel.js";
import { CHUNK, type Evaluation, type ShardTotals, softplus } from "./network.js";
import { type Layout, layoutOf, type ModelSpec, validateSpec } from "./spec.js";

/** Options of {@link FastKernel}. */
export interface FastKernelOptions {
  /**
   * Largest training set (pixel bytes) copied into the kernel's memory to
   * stay resident; larger ones are copied example by example on every
   * gradSum. Pixels already in a pixel home (pixel-memory.ts) are used in
   * place whatever their size. Default 1 GiB.
   */
  maxResidentBytes?: number;
}

/**
 * The WebAssembly SIMD kernel bound to a spec. Not re-entrant: one instance
 * per thread of computation (as the reference kernel).
 */
export class FastKernel implements Kernel {
  readonly spec: ModelSpec;
  readonly layout: Layout;
  /** Where every tensor lives in the kernel's memory. */
  private readonly ws: Workspace;
  /** The memory the kernel works in, its instance and views, and the resident pixels. */
  private readonly instance: FastInstance;

  constructor(spec: ModelSpec, opts: FastKernelOptions = {}) {
    validateSpec(spec);
    this.spec = spec;
    this.layout = layoutOf(spec.layers);
    this.ws = new Workspace(spec, this.layout);
    this.instance = new FastInstance(this.ws, opts.maxResidentBytes ?? 2 ** 30);
  }

  /**
   * Sum over the examples `data[idx[from..to)]` of the per-example gradient
   * dC_k/dθ, written into `grad` (overwritten, float32, parameter layout).
   * Returns the summed cost and the count; the mean is taken where all shards meet.
   */
  gradSum(
    params: Float32Array,
    data: Dataset,
    idx: Uint32Array,
    from: number,
    to: number,
    grad: Float32Array,
  ): ShardTotals {
    this.checkShapes(params, data);
    if (grad.length !== this.layout.size) {
      throw new Error(`gradient buffer has ${grad.length} values, the model needs ${this.layout.size}`);
    }
    if (!(Number.isInteger(from) && Number.isInteger(to) && 0 <= from && from <= to && to <= idx.length)) {
      throw new Error(`shard range [${from}, ${to}) is not inside the ${idx.length} indices`);
    }
    const ws = this.ws;
    const instance = this.instance;
    const resident = instance.makeResident(data);
    instance.claimWorkspace();
    // Taken after makeResident, which may have bound the kernel to another memory.
    const { wasm: w, f32 } = instance;
    loadParams(ws, w, f32, params);
    const g = ws.grad >> 2;
    const g64 = ws.grad64 >> 3;
    f32.fill(0, g, g + ws.padSize);
    const chunked = to - from > CHUNK;
    if (chunked) instance.f64.fill(0, g64, g64 + ws.padSize);
    let cost = 0;
    for (let s = from; s < to; s += CHUNK) {
      const rows = Math.min(CHUNK, to - s);
      if (resident) {
        instance.pointRows(data, idx, s, rows);
        w.touch(rows, ws.rowPtr, data.pixels);
      } else {
        instance.gatherRows(data, idx, s, rows);
      }
      this.forward(rows);
      cost += this.outputDelta(data.labels, idx, s, rows);
      this.backward(rows);
      if (chunked) {
        w.add_f64(ws.grad64, ws.grad, ws.padSize); // and zeroes the chunk's sums
      }
    }
    if (chunked) w.to_f32(ws.grad, ws.grad64, ws.padSize);
    storeGrad(ws, w, f32, grad);
    return { cost, count: to - from };
  }

  /** Accuracy and mean cost of `params` on a whole dataset. */
  evaluate(params: Float32Array, data: Dataset): Evaluation {
    this.checkShapes(params, data);
    const ws = this.ws;
    const instance = this.instance;
    instance.claimWorkspace();
    const { wasm: w, f32, u8, i32 } = instance;
    loadParams(ws, w, f32, params);
    const px = data.pixels;
    const { nOut, nOutP } = ws.pad[ws.nLayers - 1];
    const out = ws.acts[ws.nLayers] >> 2;
    let correct = 0;
    let cost = 0;
    for (let s = 0; s < data.n; s += CHUNK) {
      const rows = Math.min(CHUNK, data.n - s);
      // Rows in order: one contiguous copy (evaluation is off the hot path).
      u8.set(data.images.subarray(s * px, (s + rows) * px), ws.input);
      for (let r = 0; r < rows; r++) i32[(ws.rowPtr >> 2) + r] = ws.input + r * px;
      this.forward(rows);
      for (let r = 0; r < rows; r++) {
        const label = data.labels[s + r];
        cost += this.exampleCost(r, label);
        const o = out + r * nOutP;
        let best = 0;
        for (let j = 1; j < nOut; j++) if (f32[o + j] > f32[o + best]) best = j;
        if (best === label) correct++;
      }
    }
    return { accuracy: data.n ? correct / data.n : 0, cost: data.n ? cost / data.n : 0, correct, n: data.n };
  }

  private checkShapes(params: Float32Array, data: Dataset): void {
    if (params.length !== this.layout.size) {
      throw new Error(`parameter buffer has ${params.length} values, the model needs ${this.layout.size}`);
    }
    if (data.pixels !== this.spec.layers[0]) {
      throw new Error(
        `the data has ${data.pixels} pixels per example, the first layer has ${this.spec.layers[0]}`,
      );
    }
    if (data.images.length < data.n * data.pixels || data.labels.length < data.n) {
      throw new Error(
        `the dataset holds ${data.images.length} pixel bytes and ${data.labels.length} labels, too few for ${data.n} examples of ${data.pixels} pixels`,
      );
    }
  }

  /** Forward pass of the gathered rows: activations of every layer (and the output pre-activations). */
  private forward(rows: number): void {
    const w = this.instance.wasm;
    const L = this.ws.nLayers;
    const px = this.spec.layers[0];
    w.scan(
      rows,
      this.ws.rowPtr,
      px,
      this.ws.pad[0].nOutP * 4,
      this.ws.start,
      this.ws.idx,
      this.ws.val,
      this.ws.scale,
      this.ws.pix,
      this.ws.cursor,
    );
    for (let l = 0; l < L; l++) {
      const P = this.ws.pad[l];
      const last = l === L - 1;
      const z = last ? this.ws.zOut : this.ws.acts[l + 1];
      if (l === 0) w.sparse_fwd(rows, this.ws.start, this.ws.idx, this.ws.val, P.w, P.nOutP, P.b, z);
      else w.dense_fwd(rows, this.ws.acts[l], P.nInP, P.nIn, P.w, P.nOutP, P.b, z);
      const n = rows * P.nOutP;
      if (!last) {
        if (this.spec.hidden === "relu") w.relu(z, z, n);
        else w.sigmoid(z, z, n, this.ws.consts);
      } else if (this.spec.output === "sigmoid") {
        w.sigmoid(this.ws.acts[L], z, n, this.ws.consts);
      } else {
        this.softmax(rows);
      }
    }
  }

  /** Output activations = softmax of the pre-activations, row by row, in float64. */
  private softmax(rows: number): void {
    const f32 = this.instance.f32;
    const { nOut, nOutP } = this.ws.pad[this.ws.nLayers - 1];
    for (let r = 0; r < rows; r++) {
      const z = (this.ws.zOut >> 2) + r * nOutP;
      const a = (this.ws.acts[this.ws.nLayers] >> 2) + r * nOutP;
      let m = Number.NEGATIVE_INFINITY;
      for (let j = 0; j < nOut; j++) if (f32[z + j] > m) m = f32[z + j];
      let s = 0;
      for (let j = 0; j < nOut; j++) s += Math.exp(f32[z + j] - m);
      for (let j = 0; j < nOut; j++) f32[a + j] = Math.exp(f32[z + j] - m) / s;
    }
  }

  /** Sets the output layer's deltas dC/dz and returns the rows' summed cost. */
  private outputDelta(labels: Uint8Array, idx: Uint32Array, s: number, rows: number): number {
    const f32 = this.instance.f32;
    const { nOut, nOutP } = this.ws.pad[this.ws.nLayers - 1];
    const { output, cost } = this.spec;
    let total = 0;
    for (let r = 0; r < rows; r++) {
      const label = labels[idx[s + r]];
      const a = (this.ws.acts[this.ws.nLayers] >> 2) + r * nOutP;
      const d = (this.ws.deltas[this.ws.nLayers] >> 2) + r * nOutP;
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
      total += this.exampleCost(r, label);
    }
    return total;
  }

  /** Cost of gathered row r (as network.ts exampleCost, from the float32 outputs). */
  private exampleCost(r: number, label: number): number {
    const f32 = this.instance.f32;
    const { nOut, nOutP } = this.ws.pad[this.ws.nLayers - 1];
    const a = (this.ws.acts[this.ws.nLayers] >> 2) + r * nOutP;
    const z = (this.ws.zOut >> 2) + r * nOutP;
    let c = 0;
    if (this.spec.cost === "quadratic") {
      for (let j = 0; j < nOut; j++) {
        const e = f32[a + j] - (j === label ? 1 : 0);
        c += e * e;
      }
    } else if (this.spec.output === "softmax") {
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

  /** Backward pass: accumulates every layer's dW, db and propagates the deltas down. */
  private backward(rows: number): void {
    const w = this.instance.wasm;
    for (let l = this.ws.nLayers - 1; l >= 0; l--) {
      const P = this.ws.pad[l];
      const d = this.ws.deltas[l + 1];
      if (l === 0) {
        const px = this.spec.layers[0];
        // Wide layers sort the entries by pixel first: the sort costs about as
        // much as one 16-output block of sparse_dw, and then every block sums
        // in registers instead of loading and storing dW once per entry.
        if (this.ws.csc) {
          w.csc(
            rows,
            this.ws.start,
            this.ws.pix,
            this.ws.val,
            px,
            this.ws.cursor,
            this.ws.cstart,
            this.ws.crow,
            this.ws.cval,
            P.nOutP * 4,
          );
          w.sparse_dw_csc(px, this.ws.cstart, this.ws.crow, this.ws.cval, d, P.nOutP, P.gw);
        } else w.sparse_dw(rows, this.ws.start, this.ws.idx, this.ws.val, d, P.nOutP, P.gw);
        w.bias_dw(rows, d, P.nOutP, P.gb);
        break;
      }
      if (w.all_finite(d, rows * P.nOutP)) {
        w.dense_dw(rows, this.ws.acts[l], P.nInP, P.nIn, d, P.nOutP, P.gw);
        w.bias_dw(rows, d, P.nOutP, P.gb);
      } else {
        // A non-finite delta (a diverging run): the skipping kernel keeps 0 · ∞ out, as the reference.
        w.dense_dw_skip(rows, this.ws.acts[l], P.nInP, P.nIn, d, P.nOutP, P.gw, P.gb);
      }
      // delta_prev = (W · delta) ⊙ act'(a_prev): the forward product over the transposed weights.
      w.dense_fwd(rows, d, P.nOutP, P.nOut, P.wt, P.nInP, this.ws.zeros, this.ws.deltas[l]);
      if (this.spec.hidden === "relu") w.drelu(this.ws.deltas[l], this.ws.acts[l], rows * P.nInP);
      else w.dsigmoid(this.ws.deltas[l], this.ws.acts[l], rows * P.nInP);
    }
  }
}
