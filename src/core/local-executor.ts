/**
 * The in-process GradientExecutor (`train --workers 0`): computes every
 * shard of a step here, one after another, with the same kernel a worker
 * uses, so its bits are the cluster's bits.
 */
import type { DataBundle } from "./dataset.js";
import { type F32Heap, treeHeap } from "./f32-heap.js";
import { makeKernel } from "./kernel.js";
import type { RunConfig } from "./run-config.js";
import type { GradBlock } from "./shard-tree.js";
import { layoutOf } from "./spec.js";
import type { GradientExecutor, StepOutcome, StepRequest } from "./trainer.js";

/** Computes shards in this process. */
export class LocalExecutor implements GradientExecutor {
  private readonly kernel;
  private readonly grads: Float32Array[] = [];
  /** The shards' gradients and the trainer's tree sums, for SIMD additions (see F32Heap). */
  readonly heap?: F32Heap;

  constructor(
    cfg: RunConfig,
    private readonly data: DataBundle,
  ) {
    this.kernel = makeKernel(cfg.kernel, cfg.spec);
    this.kernel.prepare?.(data.train);
    this.heap = treeHeap(layoutOf(cfg.spec.layers).size, cfg.shards);
  }

  /** Every shard's gradient, each a leaf of the step's shard tree (the trainer adds them up). */
  async computeStep(req: StepRequest): Promise<StepOutcome> {
    const perm = req.permutation();
    const t0 = performance.now();
    const blocks: GradBlock[] = req.shards.map((s, i) => {
      this.grads[i] ??= this.heap?.alloc() ?? new Float32Array(req.params.length);
      const grad = this.grads[i];
      const { cost, count } = this.kernel.gradSum(req.params, this.data.train, perm, s.start, s.end, grad);
      return { lo: i, hi: i + 1, grad, cost, count };
    });
    return { blocks, computeSeconds: (performance.now() - t0) / 1000 };
  }
}
