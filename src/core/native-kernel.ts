/**
 * The native kernel, the fast kernel's C implementation (what `--kernel
 * fast` runs where it is built; `--kernel native` requires it): the same
 * contract as the reference kernel (network.ts) — the float32 SUM of a
 * shard's per-example gradients,
 * the summed cost and the count — computed by a C addon
 * (native/kernel.c, built by scripts/build-native.mjs into
 * dist/native/gradfleet-kernel.node) in float32 with GCC vector extensions.
 *
 * It is the fastest kernel where it is built, but it is built per machine
 * (with the compiler's -march=native) and only where a C compiler exists:
 * {@link nativeKernelUnavailable} says why it is not there. Its bits are the
 * WebAssembly kernel's (fast-kernel.ts), on every call and in every process:
 * every sum runs in the same order, without fused multiply-adds, and
 * softmax, the output deltas and the cost are output-rows.ts's, called here
 * between the addon's blocks.
 *
 * Each dataset is turned into lists of its nonzero pixels once (in native
 * memory, freed when the dataset's `images` array is garbage); datasets are
 * immutable in gradfleet and recognised by their `images` array.
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import type { Dataset } from "./dataset.js";
import type { Kernel } from "./kernel.js";
import { checkGradSum, checkShapes } from "./kernel-checks.js";
import { CHUNK, type Evaluation, type ShardTotals } from "./network.js";
import { exampleCost, type OutputRows, outputDelta, predicted, softmax } from "./output-rows.js";
import { type Layout, layoutOf, type ModelSpec, validateSpec } from "./spec.js";

/** An opaque native object (a network's buffers or a dataset's sparse lists). */
type Handle = { readonly __native: unique symbol };

/** The addon's exports (see the N-API glue at the end of kernel.c). */
interface Addon {
  /** Examples per block. */
  readonly blockRows: number;
  /** Blocks per float64 fold: blockRows * foldBlocks must be CHUNK. */
  readonly foldBlocks: number;
  /** Floats per vector: row strides are multiples of it. */
  readonly vectorWidth: number;
  /** The network's handle, and where in `out` its output rows start (the first whole vector). */
  createNet(
    sizes: Int32Array,
    relu: number,
    softmax: number,
    crossEntropy: number,
    out: Float32Array,
  ): [Handle, number];
  createData(images: Uint8Array, n: number, pixels: number): Handle;
  /** Starts a gradient sum over idx[from..to), or an evaluation of rows [from, to) when idx is null. */
  begin(
    net: Handle,
    data: Handle,
    params: Float32Array,
    idx: Uint32Array | null,
    from: number,
    to: number,
  ): void;
  /** Forwards the next block; returns its rows, 0 when none is left. */
  forward(net: Handle): number;
  /** Backward of the forwarded block, once its output deltas are written. */
  backward(net: Handle): void;
  /** Every block of the gradient sum begun, for a sigmoid output with the quadratic cost; the summed cost. */
  runQuadratic(net: Handle, labels: Uint8Array): number;
  /** Writes the gradient sum into grad. */
  finish(net: Handle, grad: Float32Array): void;
}

/**
 * Where the addon is: `<package>/dist/native/`, reached from this module in
 * dist/src/core/ (the build) or in src/core/ (tests run the sources).
 */
function addonPaths(): string[] {
  return ["../../../dist/native/gradfleet-kernel.node", "../../dist/native/gradfleet-kernel.node"].map((p) =>
    fileURLToPath(new URL(p, import.meta.url)),
  );
}

let loaded: { addon?: Addon; why?: string } | undefined;

/**
 * Loads the addon once (from GRADFLEET_NATIVE_ADDON when set: an addon built
 * elsewhere for this machine); remembers why it could not be loaded.
 */
function load(): { addon?: Addon; why?: string } {
  if (loaded) return loaded;
  const chosen = process.env.GRADFLEET_NATIVE_ADDON;
  const file = chosen ? (existsSync(chosen) ? chosen : undefined) : addonPaths().find((p) => existsSync(p));
  if (!file) {
    loaded = {
      why: chosen
        ? `GRADFLEET_NATIVE_ADDON names ${chosen}, which does not exist`
        : "not built (no dist/native/gradfleet-kernel.node: npm run build compiles it where a C compiler (cc) and node's headers exist)",
    };
    return loaded;
  }
  try {
    const a = createRequire(import.meta.url)(file) as Addon;
    // The float64 folds must fall where the WebAssembly kernel's do, or the bits differ.
    loaded =
      a.blockRows * a.foldBlocks === CHUNK
        ? { addon: a }
        : {
            why: `${file} folds every ${a.blockRows * a.foldBlocks} examples, not every ${CHUNK}: rebuild it`,
          };
  } catch (e) {
    loaded = { why: `${file} does not load: ${(e as Error).message.split("\n")[0]}` };
  }
  return loaded;
}

/** Why `--kernel native` cannot run in this process, or undefined when it can. */
export function nativeKernelUnavailable(): string | undefined {
  return load().why;
}

/** The addon, or an error saying why `--kernel native` is not available here. */
function addon(): Addon {
  const { addon: a, why } = load();
  if (!a) throw new Error(`--kernel native is not available on this machine: ${why}`);
  return a;
}

/** A dataset's sparse lists, with the shape they were made for. */
interface SparseData {
  handle: Handle;
  n: number;
  pixels: number;
}

/** Sparse lists of every dataset seen, by its images array (shared by all instances). */
const sparseCache = new WeakMap<Uint8Array, SparseData>();

/** The sparse lists of a dataset, made on first use. */
function sparseOf(a: Addon, data: Dataset): Handle {
  const known = sparseCache.get(data.images);
  if (known && known.n === data.n && known.pixels === data.pixels) return known.handle;
  const handle = a.createData(data.images, data.n, data.pixels);
  sparseCache.set(data.images, { handle, n: data.n, pixels: data.pixels });
  return handle;
}

/**
 * The native kernel bound to a spec. Not re-entrant: one instance per thread
 * of computation (as the other kernels). Throws when the addon is not
 * available (see {@link nativeKernelUnavailable}).
 */
export class NativeKernel implements Kernel {
  readonly spec: ModelSpec;
  readonly layout: Layout;
  private readonly addon: Addon;
  /** The network's padded weights, gradient sums and workspace, in native memory. */
  private readonly net: Handle;
  /** The output layer's rows of a block, shared with the addon (createNet's `out`). */
  private readonly f32: Float32Array;
  private readonly out: OutputRows;

  constructor(spec: ModelSpec) {
    validateSpec(spec);
    this.spec = spec;
    this.layout = layoutOf(spec.layers);
    this.addon = addon();
    const { blockRows, vectorWidth } = this.addon;
    const nOut = spec.layers[spec.layers.length - 1];
    const stride = Math.ceil(nOut / vectorWidth) * vectorWidth;
    const rows = blockRows * stride;
    this.f32 = new Float32Array(3 * rows + vectorWidth);
    const [net, at] = this.addon.createNet(
      Int32Array.from(spec.layers),
      spec.hidden === "relu" ? 1 : 0,
      spec.output === "softmax" ? 1 : 0,
      spec.cost === "cross-entropy" ? 1 : 0,
      this.f32,
    );
    this.net = net;
    this.out = { spec, nOut, stride, z: at, a: at + rows, d: at + 2 * rows };
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
    const { addon: a, net, out, f32 } = this;
    // begin checks every index against data.n before anything is computed.
    a.begin(net, sparseOf(a, data), params, idx, from, to);
    if (this.spec.output === "sigmoid" && this.spec.cost === "quadratic") {
      // The seed model's output layer needs no exp or log: the addon
      // computes its deltas and cost itself, in outputDelta's float64 order.
      const cost = a.runQuadratic(net, data.labels);
      a.finish(net, grad);
      return { cost, count: to - from };
    }
    // The cost is summed per CHUNK examples, then the chunks' sums: the
    // WebAssembly kernel's order (fast-kernel.ts), so the costs agree too.
    let cost = 0;
    let chunk = 0;
    let blocks = 0;
    for (let s = from, rows = a.forward(net); rows > 0; s += rows, rows = a.forward(net)) {
      if (this.spec.output === "softmax") softmax(out, f32, rows);
      chunk = outputDelta(out, f32, data.labels, idx, s, rows, chunk);
      a.backward(net);
      if (++blocks === a.foldBlocks) {
        cost += chunk;
        chunk = 0;
        blocks = 0;
      }
    }
    if (blocks) cost += chunk;
    a.finish(net, grad);
    return { cost, count: to - from };
  }

  /** Makes the dataset's lists of nonzero pixels now (else the first gradSum or evaluate on it does). */
  prepare(data: Dataset): void {
    sparseOf(this.addon, data);
  }

  /** Accuracy and mean cost of `params` on a whole dataset. */
  evaluate(params: Float32Array, data: Dataset): Evaluation {
    checkShapes(this.layout, this.spec, params, data);
    const { addon: a, net, out, f32 } = this;
    a.begin(net, sparseOf(a, data), params, null, 0, data.n);
    let correct = 0;
    let cost = 0;
    for (let s = 0, rows = a.forward(net); rows > 0; s += rows, rows = a.forward(net)) {
      if (this.spec.output === "softmax") softmax(out, f32, rows);
      for (let r = 0; r < rows; r++) {
        const label = data.labels[s + r];
        cost += exampleCost(out, f32, r, label);
        if (predicted(out, f32, r) === label) correct++;
      }
    }
    return { accuracy: data.n ? correct / data.n : 0, cost: data.n ? cost / data.n : 0, correct, n: data.n };
  }
}
