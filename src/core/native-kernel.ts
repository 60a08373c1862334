/**
 * The native kernel (`--kernel native`): the same contract as the reference
 * kernel (network.ts) — the float32 SUM of a shard's per-example gradients,
 * the summed cost and the count — computed by a C addon
 * (native/kernel.c, built by scripts/build-native.mjs into
 * dist/native/gradfleet-kernel.node) in float32 with GCC vector extensions.
 *
 * It is the fastest kernel where it is built, but it is built per machine
 * (with the compiler's -march=native) and only where a C compiler exists:
 * {@link nativeKernelUnavailable} says why it is not there. Its bits are its
 * own (they differ from `fast` and `ref` within float32 rounding), and are
 * the same on every call and in every process: every sum runs in a fixed
 * order, without fused multiply-adds, with its own exp and log.
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
import type { Evaluation, ShardTotals } from "./network.js";
import { type Layout, layoutOf, type ModelSpec, validateSpec } from "./spec.js";

/** An opaque native object (a network's buffers or a dataset's sparse lists). */
type Handle = { readonly __native: unique symbol };

/** The addon's exports (see the N-API glue at the end of kernel.c). */
interface Addon {
  createNet(sizes: Int32Array, relu: number, softmax: number, crossEntropy: number): Handle;
  createData(images: Uint8Array, n: number, pixels: number): Handle;
  gradSum(
    net: Handle,
    data: Handle,
    labels: Uint8Array,
    params: Float32Array,
    idx: Uint32Array,
    from: number,
    to: number,
    grad: Float32Array,
  ): number;
  evaluate(net: Handle, data: Handle, labels: Uint8Array, params: Float32Array): [number, number];
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
    loaded = { addon: createRequire(import.meta.url)(file) as Addon };
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

  constructor(spec: ModelSpec) {
    validateSpec(spec);
    this.spec = spec;
    this.layout = layoutOf(spec.layers);
    this.addon = addon();
    this.net = this.addon.createNet(
      Int32Array.from(spec.layers),
      spec.hidden === "relu" ? 1 : 0,
      spec.output === "softmax" ? 1 : 0,
      spec.cost === "cross-entropy" ? 1 : 0,
    );
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
    // The addon checks every index against data.n before it computes.
    const cost = this.addon.gradSum(
      this.net,
      sparseOf(this.addon, data),
      data.labels,
      params,
      idx,
      from,
      to,
      grad,
    );
    return { cost, count: to - from };
  }

  /** Makes the dataset's lists of nonzero pixels now (else the first gradSum or evaluate on it does). */
  prepare(data: Dataset): void {
    sparseOf(this.addon, data);
  }

  /** Accuracy and mean cost of `params` on a whole dataset. */
  evaluate(params: Float32Array, data: Dataset): Evaluation {
    checkShapes(this.layout, this.spec, params, data);
    const [correct, cost] = this.addon.evaluate(this.net, sparseOf(this.addon, data), data.labels, params);
    return { accuracy: data.n ? correct / data.n : 0, cost: data.n ? cost / data.n : 0, correct, n: data.n };
  }
}
