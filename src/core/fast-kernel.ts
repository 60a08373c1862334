/**
 * The fast gradient kernel: the same contract as the reference kernel
 * (network.ts) — the float32 SUM of the per-example gradients of a shard, the
 * summed cost and the count — computed by WebAssembly SIMD (wasm/kernel.wat)
 * in float32.
 *
 * The pieces, as llm.c has them (all tensors in one buffer at fixed
 * addresses; a forward/backward pair per layer): fast-workspace.ts lays the
 * tensors out in the kernel's WebAssembly memory; fast-instance.ts holds that
 * memory, the kernel's instance over it and the resident pixels;
 * fast-passes.ts runs a chunk forward and backward through the layers. This
 * module ties them together behind the {@link Kernel} interface.
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
import { backward, forward } from "./fast-passes.js";
import { loadParams, storeGrad, Workspace } from "./fast-workspace.js";
import type { Kernel } from "./kernel.js";
import { checkGradSum, checkShapes } from "./kernel-checks.js";
import { CHUNK, type Evaluation, type ShardTotals } from "./network.js";
import { exampleCost, outputDelta, predicted } from "./output-rows.js";
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
    checkGradSum(this.layout, this.spec, params, data, idx, from, to, grad);
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
      forward(ws, w, f32, rows);
      cost += outputDelta(ws.out, f32, data.labels, idx, s, rows);
      backward(ws, w, rows);
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
    checkShapes(this.layout, this.spec, params, data);
    const ws = this.ws;
    const instance = this.instance;
    instance.claimWorkspace();
    const { wasm: w, f32, u8, i32 } = instance;
    loadParams(ws, w, f32, params);
    const px = data.pixels;
    let correct = 0;
    let cost = 0;
    for (let s = 0; s < data.n; s += CHUNK) {
      const rows = Math.min(CHUNK, data.n - s);
      // Rows in order: one contiguous copy (evaluation is off the hot path).
      u8.set(data.images.subarray(s * px, (s + rows) * px), ws.input);
      for (let r = 0; r < rows; r++) i32[(ws.rowPtr >> 2) + r] = ws.input + r * px;
      forward(ws, w, f32, rows);
      for (let r = 0; r < rows; r++) {
        const label = data.labels[s + r];
        cost += exampleCost(ws.out, f32, r, label);
        if (predicted(ws.out, f32, r) === label) correct++;
      }
    }
    return { accuracy: data.n ? correct / data.n : 0, cost: data.n ? cost / data.n : 0, correct, n: data.n };
  }
}
