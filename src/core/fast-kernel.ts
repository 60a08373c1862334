/**
 * The fast gradient kernel: the same contract as the reference kernel
 * (network.ts) — the float32 SUM of the per-example gradients of a shard, the
 * summed cost and the count — computed by WebAssembly SIMD (wasm/kernel.wat)
 * in float32.
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
import type { Kernel } from "./kernel.js";
import { CHUNK, type Evaluation, type ShardTotals, softplus } from "./network.js";
import { type PixelHome, pixelHomeOf } from "./pixel-memory.js";
import { type Layout, layoutOf, type ModelSpec, validateSpec } from "./spec.js";
import {
  instantiateKernel,
  type KernelExports,
  type KernelMemory,
  newKernelMemory,
  WASM_PAGE,
} from "./wasm/module.js";

/** Padded widths of the first layer from which its dW is summed pixel by pixel (csc) rather than row by row. */
const CSC_MIN_OUTPUTS = 32;

/** Bytes of the sigmoid's constant table (kernel.wat, sigmoid_consts). */
const SIGMOID_CONSTS_BYTES = 224;

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

const roundUp = (n: number, m: number) => Math.ceil(n / m) * m;

/** Hands out 16-byte-aligned regions of the kernel's memory. */
class Arena {
  size = 0;
  /** Reserves `bytes` and returns the region's byte address. */
  take(bytes: number): number {
    const at = this.size;
    this.size = roundUp(at + bytes, 16);
    return at;
  }
}

/** Byte addresses of one layer's tensors in the padded layout. */
interface PaddedLayer {
  nIn: number;
  nOut: number;
  /** nIn and nOut rounded up to a multiple of 4. */
  nInP: number;
  nOutP: number;
  /** Weights (nIn rows of nOutP floats) and biases (nOutP floats) inside the parameter region. */
  w: number;
  b: number;
  /** The same tensors inside the gradient region. */
  gw: number;
  gb: number;
  /** Transposed weights (nOut rows of nInP floats), for back-propagation; 0 for the first layer. */
  wt: number;
}

/** Ids of kernels, to tell which one's workspace a pixel home holds. */
let kernelIds = 0;

/**
 * The WebAssembly SIMD kernel bound to a spec. Not re-entrant: one instance
 * per thread of computation (as the reference kernel).
 */
export class FastKernel implements Kernel {
  readonly spec: ModelSpec;
  readonly layout: Layout;
  private readonly id = ++kernelIds;
  // The memory the kernel works in and its instance over it: its own, or a
  // pixel home's (see makeResident). Both change only in bind.
  private wasm!: KernelExports;
  private memory!: KernelMemory;
  /** The pixel home whose room holds the workspace, when the kernel works in one. */
  private home: PixelHome | undefined;
  // Views of the memory; remade when the kernel binds to another memory.
  private f32!: Float32Array;
  private f64!: Float64Array;
  private u8!: Uint8Array;
  private i32!: Int32Array;
  private readonly nLayers: number;
  private readonly pad: PaddedLayer[];
  /** Padded widths of layers 0..L. */
  private readonly widthP: number[];
  /** Floats in the padded parameter (and gradient) layout. */
  private readonly padSize: number;
  private readonly params: number;
  private readonly grad: number;
  private readonly grad64: number;
  /** Unpadded parameter layout: parameters in, gradient out. */
  private readonly staging: number;
  private readonly zeros: number;
  private readonly scale: number;
  /** The sigmoid's constant table (written with the scale table). */
  private readonly consts: number;
  /** Pixel bytes of up to CHUNK examples, when they are not resident. */
  private readonly input: number;
  /** Byte address of each example of the chunk (i32 per row). */
  private readonly rowPtr: number;
  private readonly start: number;
  private readonly idx: number;
  private readonly val: number;
  /** Whether the first layer's dW goes pixel by pixel (csc; a wide first layer). */
  private readonly csc: boolean;
  /** Pixel index (i32) of each sparse entry, for csc; 0 (none) without csc. */
  private readonly pix: number;
  /** The entries sorted by pixel (csc): px + 1 starts, row offsets, values; and px counters (scan counts, csc's cursor). */
  private readonly cstart: number;
  private readonly crow: number;
  private readonly cval: number;
  private readonly cursor: number;
  /** acts[l], deltas[l] for l = 1..L (index 0 unused: the input is sparse). */
  private readonly acts: number[];
  private readonly deltas: number[];
  private readonly zOut: number;
  /** Bytes of the workspace (whole pages): where copied pixels start, and the room a pixel home must offer. */
  private readonly workspaceEnd: number;
  private readonly maxResidentBytes: number;
  /** The `images` array whose bytes are resident in the current memory, if any. */
  private resident: Uint8Array | undefined;
  /** Byte address of the resident array's first pixel. */
  private residentAt = 0;

  constructor(spec: ModelSpec, opts: FastKernelOptions = {}) {
    validateSpec(spec);
    this.spec = spec;
    this.layout = layoutOf(spec.layers);
    this.nLayers = spec.layers.length - 1;
    this.widthP = spec.layers.map((n) => roundUp(n, 4));
    const pixels = spec.layers[0];
    const arena = new Arena();
    let padSize = 0;
    const offsets = this.layout.layers.map((L, l) => {
      const nOutP = this.widthP[l + 1];
      const w = padSize;
      const b = w + L.nIn * nOutP;
      padSize = b + nOutP;
      return { w, b };
    });
    this.padSize = padSize;
    this.params = arena.take(padSize * 4);
    this.grad = arena.take(padSize * 4);
    this.grad64 = arena.take(padSize * 8);
    this.staging = arena.take(this.layout.size * 4);
    this.zeros = arena.take(Math.max(...this.widthP) * 4);
    this.scale = arena.take(256 * 4);
    this.consts = arena.take(SIGMOID_CONSTS_BYTES);
    this.input = arena.take(CHUNK * pixels + 16);
    this.rowPtr = arena.take(CHUNK * 4);
    this.start = arena.take((CHUNK + 1) * 4);
    this.idx = arena.take(CHUNK * pixels * 4);
    this.val = arena.take(CHUNK * pixels * 4);
    // The pixel-sorted copy of the entries, only for a wide first layer (see backward).
    this.csc = this.widthP[1] >= CSC_MIN_OUTPUTS;
    const cscBytes = this.csc ? CHUNK * pixels * 4 : 0;
    this.pix = this.csc ? arena.take(cscBytes) : 0;
    this.crow = arena.take(cscBytes);
    this.cval = arena.take(cscBytes);
    this.cstart = arena.take(this.csc ? (pixels + 1) * 4 : 0);
    this.cursor = arena.take(this.csc ? pixels * 4 : 0);
    this.pad = this.layout.layers.map((L, l) => ({
      nIn: L.nIn,
      nOut: L.nOut,
      nInP: this.widthP[l],
      nOutP: this.widthP[l + 1],
      w: this.params + offsets[l].w * 4,
      b: this.params + offsets[l].b * 4,
      gw: this.grad + offsets[l].w * 4,
      gb: this.grad + offsets[l].b * 4,
      wt: l === 0 ? 0 : arena.take(L.nOut * this.widthP[l] * 4),
    }));
    this.acts = [0];
    this.deltas = [0];
    for (let l = 1; l <= this.nLayers; l++) {
      this.acts.push(arena.take(CHUNK * this.widthP[l] * 4));
      this.deltas.push(arena.take(CHUNK * this.widthP[l] * 4));
    }
    this.zOut = arena.take(CHUNK * this.widthP[this.nLayers] * 4);
    this.workspaceEnd = roundUp(arena.size, WASM_PAGE);
    if (this.workspaceEnd > 2 ** 31) {
      throw new Error(`layers: the fast kernel's workspace for ${spec.layers.join(",")} exceeds 2 GiB`);
    }
    this.maxResidentBytes = opts.maxResidentBytes ?? 2 ** 30;
    this.bind(newKernelMemory(this.workspaceEnd));
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
    const resident = this.makeResident(data);
    this.claimWorkspace();
    this.loadParams(params);
    const f32 = this.f32;
    const g = this.grad >> 2;
    const g64 = this.grad64 >> 3;
    f32.fill(0, g, g + this.padSize);
    const chunked = to - from > CHUNK;
    if (chunked) this.f64.fill(0, g64, g64 + this.padSize);
    let cost = 0;
    for (let s = from; s < to; s += CHUNK) {
      const rows = Math.min(CHUNK, to - s);
      if (resident) {
        this.pointRows(data, idx, s, rows);
        this.wasm.touch(rows, this.rowPtr, data.pixels);
      } else {
        this.gatherRows(data, idx, s, rows);
      }
      this.forward(rows);
      cost += this.outputDelta(data.labels, idx, s, rows);
      this.backward(rows);
      if (chunked) {
        this.wasm.add_f64(this.grad64, this.grad, this.padSize); // and zeroes the chunk's sums
      }
    }
    if (chunked) this.wasm.to_f32(this.grad, this.grad64, this.padSize);
    this.storeGrad(grad);
    return { cost, count: to - from };
  }

  /** Accuracy and mean cost of `params` on a whole dataset. */
  evaluate(params: Float32Array, data: Dataset): Evaluation {
    this.checkShapes(params, data);
    this.claimWorkspace();
    this.loadParams(params);
    const px = data.pixels;
    const { nOut, nOutP } = this.pad[this.nLayers - 1];
    const out = this.acts[this.nLayers] >> 2;
    const f32 = this.f32;
    let correct = 0;
    let cost = 0;
    for (let s = 0; s < data.n; s += CHUNK) {
      const rows = Math.min(CHUNK, data.n - s);
      // Rows in order: one contiguous copy (evaluation is off the hot path).
      this.u8.set(data.images.subarray(s * px, (s + rows) * px), this.input);
      for (let r = 0; r < rows; r++) this.i32[(this.rowPtr >> 2) + r] = this.input + r * px;
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

  /**
   * Instantiates the kernel on `memory` (a pixel home's if `home` is given)
   * and makes it the one the kernel works in; nothing is resident in it yet.
   */
  private bind(memory: KernelMemory, home?: PixelHome): void {
    this.wasm = instantiateKernel(memory).exports;
    this.memory = memory;
    this.home = home;
    this.resident = undefined;
    this.viewMemory();
    if (home) this.claimWorkspace();
    // A memory of its own is fresh, hence zero: only the scale table to write.
    else this.writeScale();
  }

  /**
   * Makes sure the workspace is this kernel's before it computes. In a pixel
   * home, another kernel (another session's, or of another spec) may have
   * laid its own out in the room since; then the room is zeroed again, as
   * the padding lanes of weights, transposes and deltas must be zero.
   */
  private claimWorkspace(): void {
    const home = this.home;
    if (!home || home.tenant === this.id) return;
    if (home.tenant !== undefined) this.u8.fill(0, 0, this.workspaceEnd);
    home.tenant = this.id;
    this.writeScale();
  }

  /** Pixel byte -> value, as the reference scales it (v / 255), rounded to float32; and the sigmoid's constants. */
  private writeScale(): void {
    for (let v = 0; v < 256; v++) this.f32[(this.scale >> 2) + v] = v / 255;
    this.wasm.sigmoid_consts(this.consts);
  }

  /** Makes the typed views of the current memory. */
  private viewMemory(): void {
    const buffer = this.memory.buffer;
    this.f32 = new Float32Array(buffer);
    this.f64 = new Float64Array(buffer);
    this.u8 = new Uint8Array(buffer);
    this.i32 = new Int32Array(buffer);
  }

  /**
   * Makes `data`'s pixel bytes resident: in place if they are in a pixel
   * home with room for the workspace, else copied once into the kernel's own
   * memory. Returns false when they are not (over the limit, or no memory
   * for the copy): then gradSum gathers example by example.
   */
  private makeResident(data: Dataset): boolean {
    if (this.resident === data.images) return true;
    const home = pixelHomeOf(data.images);
    if (home && this.workspaceEnd <= home.pixelsAt) {
      if (this.home !== home) this.bind(home.memory, home);
      this.resident = data.images;
      this.residentAt = data.images.byteOffset;
      return true;
    }
    const bytes = data.images.length;
    if (bytes > this.maxResidentBytes) return false;
    const need = this.workspaceEnd + bytes;
    // Never copied into a pixel home (its pixels are someone's dataset), and
    // never by growing a memory: a fresh one is sized once for workspace and copy.
    if (this.home || this.memory.buffer.byteLength < need) {
      let memory: KernelMemory;
      try {
        memory = newKernelMemory(need);
      } catch {
        return false; // no room for another copy: gather example by example instead
      }
      this.bind(memory);
    }
    this.u8.set(data.images, this.workspaceEnd);
    this.resident = data.images;
    this.residentAt = this.workspaceEnd;
    return true;
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

  /**
   * Copies the parameters into the padded layout and builds the transposed
   * weights. A layer whose width is a multiple of 4 has the same layout
   * padded or not: one copy straight into place. Others go through the
   * staging area and copy_rows.
   */
  private loadParams(params: Float32Array): void {
    const w = this.wasm;
    const f32 = this.f32;
    for (let l = 0; l < this.nLayers; l++) {
      const L = this.layout.layers[l];
      const P = this.pad[l];
      const layer = params.subarray(L.w, L.b + L.nOut);
      if (P.nOutP === L.nOut) {
        f32.set(layer, P.w >> 2);
      } else {
        f32.set(layer, (this.staging >> 2) + L.w);
        w.copy_rows(P.w, P.nOutP * 4, this.staging + L.w * 4, L.nOut * 4, L.nOut * 4, L.nIn);
        w.copy_rows(P.b, P.nOutP * 4, this.staging + L.b * 4, L.nOut * 4, L.nOut * 4, 1);
      }
      if (l > 0) w.transpose(P.w, P.nIn, P.nOut, P.nOutP, P.wt, P.nInP);
    }
  }

  /** Copies the padded float32 gradient out in the parameter layout (straight, as loadParams, where it can). */
  private storeGrad(grad: Float32Array): void {
    const w = this.wasm;
    const f32 = this.f32;
    for (let l = 0; l < this.nLayers; l++) {
      const L = this.layout.layers[l];
      const P = this.pad[l];
      const n = L.b + L.nOut - L.w;
      if (P.nOutP === L.nOut) {
        grad.set(f32.subarray(P.gw >> 2, (P.gw >> 2) + n), L.w);
      } else {
        w.copy_rows(this.staging + L.w * 4, L.nOut * 4, P.gw, P.nOutP * 4, L.nOut * 4, L.nIn);
        w.copy_rows(this.staging + L.b * 4, L.nOut * 4, P.gb, P.nOutP * 4, L.nOut * 4, 1);
        grad.set(f32.subarray((this.staging >> 2) + L.w, (this.staging >> 2) + L.w + n), L.w);
      }
    }
  }

  /** Points the chunk's rows at the resident bytes of examples idx[s..s+rows). */
  private pointRows(data: Dataset, idx: Uint32Array, s: number, rows: number): void {
    const i32 = this.i32;
    const ptr = this.rowPtr >> 2;
    const px = data.pixels;
    for (let r = 0; r < rows; r++) {
      const i = idx[s + r];
      if (i >= data.n) throw outside(i, s + r, data.n);
      i32[ptr + r] = this.residentAt + i * px;
    }
  }

  /** Copies the pixel bytes of examples idx[s..s+rows) into the input rows (dataset not resident). */
  private gatherRows(data: Dataset, idx: Uint32Array, s: number, rows: number): void {
    const px = data.pixels;
    const img = data.images;
    const u8 = this.u8;
    const i32 = this.i32;
    const ptr = this.rowPtr >> 2;
    let dst = this.input;
    for (let r = 0; r < rows; r++) {
      const i = idx[s + r];
      if (i >= data.n) throw outside(i, s + r, data.n);
      const src = i * px;
      for (let k = 0; k < px; k++) u8[dst + k] = img[src + k];
      i32[ptr + r] = dst;
      dst += px;
    }
  }

  /** Forward pass of the gathered rows: activations of every layer (and the output pre-activations). */
  private forward(rows: number): void {
    const w = this.wasm;
    const L = this.nLayers;
    const px = this.spec.layers[0];
    w.scan(
      rows,
      this.rowPtr,
      px,
      this.pad[0].nOutP * 4,
      this.start,
      this.idx,
      this.val,
      this.scale,
      this.pix,
      this.cursor,
    );
    for (let l = 0; l < L; l++) {
      const P = this.pad[l];
      const last = l === L - 1;
      const z = last ? this.zOut : this.acts[l + 1];
      if (l === 0) w.sparse_fwd(rows, this.start, this.idx, this.val, P.w, P.nOutP, P.b, z);
      else w.dense_fwd(rows, this.acts[l], P.nInP, P.nIn, P.w, P.nOutP, P.b, z);
      const n = rows * P.nOutP;
      if (!last) {
        if (this.spec.hidden === "relu") w.relu(z, z, n);
        else w.sigmoid(z, z, n, this.consts);
      } else if (this.spec.output === "sigmoid") {
        w.sigmoid(this.acts[L], z, n, this.consts);
      } else {
        this.softmax(rows);
      }
    }
  }

  /** Output activations = softmax of the pre-activations, row by row, in float64. */
  private softmax(rows: number): void {
    const f32 = this.f32;
    const { nOut, nOutP } = this.pad[this.nLayers - 1];
    for (let r = 0; r < rows; r++) {
      const z = (this.zOut >> 2) + r * nOutP;
      const a = (this.acts[this.nLayers] >> 2) + r * nOutP;
      let m = Number.NEGATIVE_INFINITY;
      for (let j = 0; j < nOut; j++) if (f32[z + j] > m) m = f32[z + j];
      let s = 0;
      for (let j = 0; j < nOut; j++) s += Math.exp(f32[z + j] - m);
      for (let j = 0; j < nOut; j++) f32[a + j] = Math.exp(f32[z + j] - m) / s;
    }
  }

  /** Sets the output layer's deltas dC/dz and returns the rows' summed cost. */
  private outputDelta(labels: Uint8Array, idx: Uint32Array, s: number, rows: number): number {
    const f32 = this.f32;
    const { nOut, nOutP } = this.pad[this.nLayers - 1];
    const { output, cost } = this.spec;
    let total = 0;
    for (let r = 0; r < rows; r++) {
      const label = labels[idx[s + r]];
      const a = (this.acts[this.nLayers] >> 2) + r * nOutP;
      const d = (this.deltas[this.nLayers] >> 2) + r * nOutP;
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
    const f32 = this.f32;
    const { nOut, nOutP } = this.pad[this.nLayers - 1];
    const a = (this.acts[this.nLayers] >> 2) + r * nOutP;
    const z = (this.zOut >> 2) + r * nOutP;
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
    const w = this.wasm;
    for (let l = this.nLayers - 1; l >= 0; l--) {
      const P = this.pad[l];
      const d = this.deltas[l + 1];
      if (l === 0) {
        const px = this.spec.layers[0];
        // Wide layers sort the entries by pixel first: the sort costs about as
        // much as one 16-output block of sparse_dw, and then every block sums
        // in registers instead of loading and storing dW once per entry.
        if (this.csc) {
          w.csc(
            rows,
            this.start,
            this.pix,
            this.val,
            px,
            this.cursor,
            this.cstart,
            this.crow,
            this.cval,
            P.nOutP * 4,
          );
          w.sparse_dw_csc(px, this.cstart, this.crow, this.cval, d, P.nOutP, P.gw);
        } else w.sparse_dw(rows, this.start, this.idx, this.val, d, P.nOutP, P.gw);
        w.bias_dw(rows, d, P.nOutP, P.gb);
        break;
      }
      if (w.all_finite(d, rows * P.nOutP)) {
        w.dense_dw(rows, this.acts[l], P.nInP, P.nIn, d, P.nOutP, P.gw);
        w.bias_dw(rows, d, P.nOutP, P.gb);
      } else {
        // A non-finite delta (a diverging run): the skipping kernel keeps 0 · ∞ out, as the reference.
        w.dense_dw_skip(rows, this.acts[l], P.nInP, P.nIn, d, P.nOutP, P.gw, P.gb);
      }
      // delta_prev = (W · delta) ⊙ act'(a_prev): the forward product over the transposed weights.
      w.dense_fwd(rows, d, P.nOutP, P.nOut, P.wt, P.nInP, this.zeros, this.deltas[l]);
      if (this.spec.hidden === "relu") w.drelu(this.deltas[l], this.acts[l], rows * P.nInP);
      else w.dsigmoid(this.deltas[l], this.acts[l], rows * P.nInP);
    }
  }
}

function outside(i: number, position: number, n: number): Error {
  return new Error(`example index ${i} at shard position ${position} is outside the dataset's ${n} examples`);
}
