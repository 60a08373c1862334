/**
 * The batched reference kernel: forward and backward passes over a whole
 * shard of examples as matrix products, with one forward/backward pair per
 * layer (as llm.c does). All per-shard buffers live in a workspace allocated
 * once, so the hot path allocates nothing per sample.
 *
 * Arithmetic: parameters are float32; activations, deltas and the gradient
 * accumulate in float64 and are rounded to float32 once, when the shard's
 * gradient SUM is written out. Summation order is fixed (examples in shard
 * order), so the same shard gives the same bits on every process.
 */
import type { Dataset } from "./dataset.js";
import { outputCost, outputDeltas } from "./output-layer.js";
import { type Layout, layoutOf, type ModelSpec } from "./spec.js";

export { exampleCost, softplus } from "./output-layer.js";

/** Examples processed per pass; bounds the workspace, does not change results. */
export const CHUNK = 256;

/** What a gradient computation over a shard returns besides the gradient. */
export interface ShardTotals {
  /** Sum over the shard's examples of the per-example cost. */
  cost: number;
  /** Number of examples in the shard. */
  count: number;
}

/** Result of evaluating a model on a dataset. */
export interface Evaluation {
  /** Fraction of examples whose arg-max output is the label. */
  accuracy: number;
  /** Mean per-example cost. */
  cost: number;
  correct: number;
  n: number;
}

/**
 * A network's kernels bound to a spec, with a workspace for up to CHUNK
 * examples. Not re-entrant: one instance per thread of computation.
 */
export class Network {
  readonly spec: ModelSpec;
  readonly layout: Layout;
  private readonly nLayers: number;
  /** acts[l] for l = 1..L: activations of layer l, CHUNK rows. acts[0] unused (inputs are sparse). */
  private readonly acts: Float64Array[];
  /** deltas[l]: dC/dz of layer l, CHUNK rows. */
  private readonly deltas: Float64Array[];
  /** Pre-activations of the output layer (for stable cross-entropy). */
  private readonly zOut: Float64Array;
  /** Sparse inputs: for example r, nonzero pixel indices and values in [inStart[r], inStart[r+1]). */
  private readonly inIdx: Int32Array;
  private readonly inVal: Float64Array;
  private readonly inStart: Int32Array;
  /** float64 gradient accumulator, same layout as the parameters. */
  private readonly acc: Float64Array;

  constructor(spec: ModelSpec) {
    this.spec = spec;
    this.layout = layoutOf(spec.layers);
    this.nLayers = spec.layers.length - 1;
    this.acts = spec.layers.map((n) => new Float64Array(CHUNK * n));
    this.deltas = spec.layers.map((n) => new Float64Array(CHUNK * n));
    this.zOut = new Float64Array(CHUNK * spec.layers[this.nLayers]);
    this.inIdx = new Int32Array(CHUNK * spec.layers[0]);
    this.inVal = new Float64Array(CHUNK * spec.layers[0]);
    this.inStart = new Int32Array(CHUNK + 1);
    this.acc = new Float64Array(this.layout.size);
  }

  /**
   * Sum over the examples `data[idx[from..to)]` of the per-example gradient
   * dC_k/dθ, written into `grad` (overwritten, float32, parameter layout).
   * Returns the summed cost and the count. The mean is NOT taken here: it is
   * taken once where all shards meet.
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
    const acc = this.acc;
    acc.fill(0);
    let cost = 0;
    for (let start = from; start < to; start += CHUNK) {
      const rows = Math.min(CHUNK, to - start);
      this.loadInputs(data, idx, start, rows);
      this.forwardAll(params, rows);
      const nOut = this.spec.layers[this.nLayers];
      const a = this.acts[this.nLayers];
      outputDeltas(this.spec, a, this.deltas[this.nLayers], data.labels, idx, start, rows, nOut);
      cost += outputCost(this.spec, a, this.zOut, data.labels, idx, start, rows, nOut);
      for (let l = this.nLayers - 1; l >= 0; l--) this.layerBackward(params, l, rows);
    }
    for (let p = 0; p < acc.length; p++) grad[p] = acc[p];
    return { cost, count: to - from };
  }

  /** Test accuracy and mean cost of `params` on a whole dataset. */
  evaluate(params: Float32Array, data: Dataset): Evaluation {
    this.checkShapes(params, data);
    const nOut = this.spec.layers[this.nLayers];
    const out = this.acts[this.nLayers];
    let correct = 0;
    let cost = 0;
    const all = new Uint32Array(data.n);
    for (let i = 0; i < data.n; i++) all[i] = i;
    for (let start = 0; start < data.n; start += CHUNK) {
      const rows = Math.min(CHUNK, data.n - start);
      this.loadInputs(data, all, start, rows);
      this.forwardAll(params, rows);
      cost += outputCost(this.spec, out, this.zOut, data.labels, all, start, rows, nOut);
      for (let r = 0; r < rows; r++) {
        if (argmax(out, r * nOut, nOut) === data.labels[start + r]) correct++;
      }
    }
    return { accuracy: data.n ? correct / data.n : 0, cost: data.n ? cost / data.n : 0, correct, n: data.n };
  }

  /**
   * Output activations of every layer for the given pixel rows (bytes,
   * `rows * pixels`), for prediction and visualisation. Returns one
   * Float64Array per layer 1..L, each `rows * size`.
   */
  activations(params: Float32Array, pixels: Uint8Array, rows: number): Float64Array[] {
    const nIn = this.spec.layers[0];
    const result = this.spec.layers.slice(1).map((n) => new Float64Array(rows * n));
    const data: Dataset = {
      n: rows,
      pixels: nIn,
      rows: 0,
      cols: 0,
      images: pixels,
      labels: new Uint8Array(rows),
    };
    const all = new Uint32Array(rows);
    for (let i = 0; i < rows; i++) all[i] = i;
    for (let start = 0; start < rows; start += CHUNK) {
      const n = Math.min(CHUNK, rows - start);
      this.loadInputs(data, all, start, n);
      this.forwardAll(params, n);
      for (let l = 1; l <= this.nLayers; l++) {
        const size = this.spec.layers[l];
        result[l - 1].set(this.acts[l].subarray(0, n * size), start * size);
      }
    }
    return result;
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
  }

  /** Gathers the nonzero pixels of rows idx[start..start+rows), scaled to [0,1]. */
  private loadInputs(data: Dataset, idx: Uint32Array, start: number, rows: number): void {
    const px = data.pixels;
    const img = data.images;
    const inIdx = this.inIdx;
    const inVal = this.inVal;
    let nz = 0;
    for (let r = 0; r < rows; r++) {
      this.inStart[r] = nz;
      const base = idx[start + r] * px;
      for (let k = 0; k < px; k++) {
        const v = img[base + k];
        if (v !== 0) {
          inIdx[nz] = k;
          inVal[nz] = v / 255;
          nz++;
        }
      }
    }
    this.inStart[rows] = nz;
  }

  private forwardAll(params: Float32Array, rows: number): void {
    for (let l = 0; l < this.nLayers; l++) this.layerForward(params, l, rows);
  }

  /** z = a_prev · W + b, then the activation; writes acts[l + 1] (and zOut for the last layer). */
  private layerForward(params: Float32Array, l: number, rows: number): void {
    const L = this.layout.layers[l];
    const nIn = L.nIn;
    const nOut = L.nOut;
    const wOff = L.w;
    const bOff = L.b;
    const z = this.acts[l + 1];
    for (let r = 0; r < rows; r++) {
      const o = r * nOut;
      for (let j = 0; j < nOut; j++) z[o + j] = params[bOff + j];
      if (l === 0) {
        for (let q = this.inStart[r], end = this.inStart[r + 1]; q < end; q++) {
          const a = this.inVal[q];
          const w = wOff + this.inIdx[q] * nOut;
          for (let j = 0; j < nOut; j++) z[o + j] += a * params[w + j];
        }
      } else {
        const prev = this.acts[l];
        const pi = r * nIn;
        for (let k = 0; k < nIn; k++) {
          const a = prev[pi + k];
          if (a === 0) continue;
          const w = wOff + k * nOut;
          for (let j = 0; j < nOut; j++) z[o + j] += a * params[w + j];
        }
      }
    }
    const last = l === this.nLayers - 1;
    if (last) {
      this.zOut.set(z.subarray(0, rows * nOut));
      if (this.spec.output === "softmax") softmaxRows(z, rows, nOut);
      else sigmoidInPlace(z, rows * nOut);
    } else if (this.spec.hidden === "relu") {
      for (let p = 0, n = rows * nOut; p < n; p++) if (z[p] < 0) z[p] = 0;
    } else {
      sigmoidInPlace(z, rows * nOut);
    }
  }

  /** Accumulates dW, db of layer l and propagates deltas to layer l (if hidden). */
  private layerBackward(params: Float32Array, l: number, rows: number): void {
    const L = this.layout.layers[l];
    const nIn = L.nIn;
    const nOut = L.nOut;
    const wOff = L.w;
    const bOff = L.b;
    const acc = this.acc;
    const d = this.deltas[l + 1];
    for (let r = 0; r < rows; r++) {
      const o = r * nOut;
      for (let j = 0; j < nOut; j++) acc[bOff + j] += d[o + j];
      if (l === 0) {
        for (let q = this.inStart[r], end = this.inStart[r + 1]; q < end; q++) {
          const a = this.inVal[q];
          const w = wOff + this.inIdx[q] * nOut;
          for (let j = 0; j < nOut; j++) acc[w + j] += a * d[o + j];
        }
      } else {
        const prev = this.acts[l];
        const pi = r * nIn;
        for (let k = 0; k < nIn; k++) {
          const a = prev[pi + k];
          if (a === 0) continue;
          const w = wOff + k * nOut;
          for (let j = 0; j < nOut; j++) acc[w + j] += a * d[o + j];
        }
      }
    }
    if (l === 0) return;
    // delta_prev = (W · delta) ⊙ act'(a_prev), act' from the activation itself.
    const prev = this.acts[l];
    const dPrev = this.deltas[l];
    const relu = this.spec.hidden === "relu";
    for (let r = 0; r < rows; r++) {
      const o = r * nOut;
      const pi = r * nIn;
      for (let k = 0; k < nIn; k++) {
        const w = wOff + k * nOut;
        let s = 0;
        for (let j = 0; j < nOut; j++) s += params[w + j] * d[o + j];
        const a = prev[pi + k];
        dPrev[pi + k] = relu ? (a > 0 ? s : 0) : s * a * (1 - a);
      }
    }
  }
}

/** The logistic sigmoid 1 / (1 + e^(-x)) (the notes drop the minus sign). */
export function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

function sigmoidInPlace(v: Float64Array, n: number): void {
  for (let p = 0; p < n; p++) v[p] = 1 / (1 + Math.exp(-v[p]));
}

function softmaxRows(v: Float64Array, rows: number, n: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * n;
    let m = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < n; j++) if (v[o + j] > m) m = v[o + j];
    let s = 0;
    for (let j = 0; j < n; j++) {
      const e = Math.exp(v[o + j] - m);
      v[o + j] = e;
      s += e;
    }
    for (let j = 0; j < n; j++) v[o + j] /= s;
  }
}

/** Index of the largest of v[o..o+n). */
export function argmax(v: ArrayLike<number>, o: number, n: number): number {
  let best = 0;
  for (let j = 1; j < n; j++) if (v[o + j] > v[o + best]) best = j;
  return best;
}
