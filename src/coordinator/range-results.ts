/**
 * The accepted results of a direct step's ranges: checked against the
 * step's shard plan, copied out of their frames (a frame's body is reused by
 * the next frame), and handed to the trainer as blocks of the step's shard
 * tree (see core/shard-tree.ts).
 */
import type { F32Heap } from "../core/f32-heap.js";
import type { ShardRange } from "../core/plan.js";
import { blocksOf, type GradBlock } from "../core/shard-tree.js";
import type { StepOutcome } from "../core/trainer.js";
import type { RangeResult } from "../shared/step-frames.js";
import type { ShardSpan } from "./step-round.js";

/** Why a range's result cannot be used. */
export type RangeProblem = "wrong_shard" | "non_finite";

/**
 * Why result `r` of a step with non-empty shards `shards` cannot be used,
 * or undefined when it can: its blocks must be the tree nodes that tile its
 * range, their sample counts the plan's, its costs finite. (Its gradients'
 * finiteness is RangeResults.stage's to check, on its copy.)
 */
export function checkRange(shards: readonly ShardRange[], r: RangeResult): RangeProblem | undefined {
  if (r.hi > shards.length) return "wrong_shard";
  const blocks = blocksOf(r.lo, r.hi, shards.length);
  if (r.counts.length !== blocks.length) return "wrong_shard";
  for (const [i, [lo, hi]] of blocks.entries()) {
    let n = 0;
    for (let s = lo; s < hi; s++) n += shards[s].end - shards[s].start;
    if (r.counts[i] !== n) return "wrong_shard";
  }
  for (const c of r.costs) if (!Number.isFinite(c)) return "non_finite";
  return undefined;
}

/** One step's accepted results, in buffers reused from step to step. */
export class RangeResults {
  /** A gradient buffer per block start (a start names one block per step). */
  private readonly grads: Float32Array[] = [];
  private readonly kept = new Map<ShardSpan, GradBlock[]>();

  /**
   * @param heap where to keep the kept gradients (the trainer adds them up
   *   the shard tree there, with SIMD additions)
   */
  constructor(
    private readonly paramCount: number,
    private readonly heap?: F32Heap,
  ) {}

  /** Starts a new step. */
  clear(): void {
    this.kept.clear();
  }

  /**
   * Copies the gradients of result `r` (checked by checkRange) of a step of
   * `k` shards out of its frame, into the buffers of its blocks, and says
   * whether every value is finite (checked on the copy: in the heap, by the
   * kernel's SIMD scan). A result that is then refused leaves nothing kept.
   */
  stage(r: RangeResult, k: number): boolean {
    const P = this.paramCount;
    let finite = true;
    for (const [i, [lo]] of blocksOf(r.lo, r.hi, k).entries()) {
      this.grads[lo] ??= this.heap?.alloc() ?? new Float32Array(P);
      const grad = this.grads[lo];
      grad.set(r.grads.subarray(i * P, (i + 1) * P));
      if (finite && !(this.heap?.allFinite(grad) ?? allFinite(grad))) finite = false;
    }
    return finite;
  }

  /** Keeps the accepted result `r` of range `u` of a step of `k` shards (staged first). */
  keep(u: ShardSpan, r: RangeResult, k: number): void {
    const blocks = blocksOf(r.lo, r.hi, k).map(([lo, hi], i) => ({
      lo,
      hi,
      grad: this.grads[lo],
      cost: r.costs[i],
      count: r.counts[i],
    }));
    this.kept.set(u, blocks);
  }

  /** The step's gradients for the trainer, once every range in `units` (in shard order) is kept. */
  outcome(units: readonly ShardSpan[], computeSeconds: number): StepOutcome {
    const inOrder = [...units].sort((a, b) => a.lo - b.lo);
    return { blocks: inOrder.flatMap((u) => this.kept.get(u)!), computeSeconds };
  }
}

/** Whether no value of `g` is NaN or infinite. */
function allFinite(g: Float32Array): boolean {
  for (let i = 0; i < g.length; i++) if (g[i] - g[i] !== 0) return false;
  return true;
}
