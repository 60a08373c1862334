/**
 * The run config: everything that determines a run's bits. Two processes
 * with the same run config and dataset compute the same weights.
 */
import { createHash } from "node:crypto";
import type { OptimizerConfig } from "./optimizer.js";
import type { ModelSpec } from "./spec.js";

/**
 * The kernels' numerics, part of the run config: every process of a run
 * computes with the same. `ref` is float64 TypeScript; `fast` is float32,
 * computed by the native addon where it is built and by WebAssembly
 * elsewhere, with the same bits either way (kernel.ts).
 */
export const KERNELS = ["ref", "fast"] as const;
export type KernelName = (typeof KERNELS)[number];

/**
 * What `--kernel` accepts: the numerics, or `fast`'s numerics computed by one
 * implementation only (`native`: the C addon, an error where it is not
 * built; `wasm`: WebAssembly). The choice of implementation is each
 * process's own; the run config records only the numerics.
 */
export const KERNEL_CHOICES = ["ref", "fast", "native", "wasm"] as const;
export type KernelChoice = (typeof KERNEL_CHOICES)[number];

/** The numerics a `--kernel` choice computes. */
export function kernelNumerics(choice: KernelChoice): KernelName {
  return choice === "ref" ? "ref" : "fast";
}

/** Everything that determines the trained weights. */
export interface RunConfig {
  spec: ModelSpec;
  optimizer: OptimizerConfig;
  epochs: number;
  /** Global mini-batch size. */
  batch: number;
  /** Fixed number of shards per mini-batch (independent of worker count). */
  shards: number;
  seed: number;
  kernel: KernelName;
}

/** sha256 of the canonical JSON of a run config (hex, 16 chars). */
export function runConfigHash(cfg: RunConfig): string {
  const canon = JSON.stringify({
    spec: { layers: cfg.spec.layers, hidden: cfg.spec.hidden, output: cfg.spec.output, cost: cfg.spec.cost },
    optimizer: {
      name: cfg.optimizer.name,
      lr: cfg.optimizer.lr,
      momentum: cfg.optimizer.momentum,
      weightDecay: cfg.optimizer.weightDecay,
    },
    epochs: cfg.epochs,
    batch: cfg.batch,
    shards: cfg.shards,
    seed: cfg.seed,
    kernel: cfg.kernel,
  });
  return createHash("sha256").update(canon).digest("hex").slice(0, 16);
}

/** sha256 (hex) of parameter bytes, little-endian float32 as in memory on every supported platform. */
export function weightsSha256(params: Float32Array): string {
  return createHash("sha256")
    .update(new Uint8Array(params.buffer, params.byteOffset, params.byteLength))
    .digest("hex");
}
