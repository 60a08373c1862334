/**
 * Kernel selection. `ref` is the TypeScript reference kernel (network.ts,
 * float64 arithmetic); `fast` is the WebAssembly SIMD kernel (fast-kernel.ts,
 * float32 arithmetic); `native` is the C addon (native-kernel.ts, float32,
 * built per machine where a C compiler exists). Each is deterministic, but
 * their bits differ: the kernel is part of the run config, so every process
 * of a run computes with the same one.
 */
import type { Dataset } from "./dataset.js";
import { FastKernel } from "./fast-kernel.js";
import { NativeKernel } from "./native-kernel.js";
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
 * Creates the kernel a run config names. Throws for `native` where the addon
 * is not available, saying why (see nativeKernelUnavailable).
 */
export function makeKernel(name: KernelName, spec: ModelSpec): Kernel {
  switch (name) {
    case "ref":
      return new Network(spec);
    case "fast":
      return new FastKernel(spec);
    case "native":
      return new NativeKernel(spec);
  }
}
