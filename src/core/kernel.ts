/**
 * Kernel selection. `ref` is the TypeScript reference kernel (network.ts,
 * float64 arithmetic). `fast` is float32 arithmetic with two
 * implementations that give the same bits: the C addon (native-kernel.ts,
 * built per machine where a C compiler exists; the fastest) and WebAssembly
 * SIMD (fast-kernel.ts; everywhere). Each process picks its implementation
 * (GRADFLEET_FAST_KERNEL), so one run may mix machines with and without the
 * addon and still get the same weights. `ref` and `fast` differ in their
 * bits: the numerics are part of the run config.
 */
import type { Dataset } from "./dataset.js";
import { FastKernel } from "./fast-kernel.js";
import { NativeKernel, nativeKernelUnavailable } from "./native-kernel.js";
import { type Evaluation, Network, type ShardTotals } from "./network.js";
import type { KernelName } from "./run-config.js";
import type { ModelSpec } from "./spec.js";

/** What a gradient kernel offers. */
export interface Kernel {
  gradSum(
    params: Float32Array,
    data: Dataset,
    idx: Uint32Array,
    from: number,
    to: number,
    grad: Float32Array,
  ): ShardTotals;
  evaluate(params: Float32Array, data: Dataset): Evaluation;
  /**
   * Readies the kernel for a dataset it will compute on (the native kernel
   * makes its lists of nonzero pixels), so that the first step does not pay
   * for it. Optional: changes no result, only when the work is done.
   */
  prepare?(data: Dataset): void;
}

/**
 * The environment variable that picks how this process computes the `fast`
 * numerics: `native` (the addon; an error where it is not built), `wasm`
 * (WebAssembly), or `auto` (the default: native where built, else wasm).
 */
export const FAST_KERNEL_ENV = "GRADFLEET_FAST_KERNEL";

/** The implementations of the `fast` numerics. */
export type FastImplementation = "native" | "wasm";

/**
 * How this process computes the `fast` numerics, from {@link FAST_KERNEL_ENV}.
 * Throws, naming the variable, for a value it does not know or for `native`
 * where the addon is not available.
 */
export function fastImplementation(env: NodeJS.ProcessEnv = process.env): FastImplementation {
  const want = env[FAST_KERNEL_ENV] || "auto";
  const why = nativeKernelUnavailable();
  switch (want) {
    case "auto":
      return why ? "wasm" : "native";
    case "wasm":
      return "wasm";
    case "native":
      if (why) throw new Error(`${FAST_KERNEL_ENV}=native: the native kernel is not available here: ${why}`);
      return "native";
    default:
      throw new Error(`${FAST_KERNEL_ENV}: "${want}" is not one of auto, native, wasm`);
  }
}

/**
 * Creates a kernel computing the numerics a run config names, `fast` by this
 * process's implementation (see {@link fastImplementation}, which says why
 * when it throws).
 */
export function makeKernel(name: KernelName, spec: ModelSpec): Kernel {
  if (name === "ref") return new Network(spec);
  return fastImplementation() === "native" ? new NativeKernel(spec) : new FastKernel(spec);
}
