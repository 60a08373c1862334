/**
 * The accepted results of a direct step's ranges: checked against the
 * step's shard plan, copied out of their frames (a frame's body is reused by
 * the next frame), and handed to the trainer as a prefix sum plus the later
 * shards in shard order (see trainer.meanGradient).
 */
import type { ShardRange } from "../core/plan.js";
import type { ShardResult, StepOutcome } from "../core/trainer.js";
import type { RangeResult } from "../shared/step-frames.js";
import type { ShardSpan } from "./step-round.js";

/** Why a range's result cannot be used. */
export type RangeProblem = "wrong_shard" | "non_finite";

/**
 * Why result `r` of a step with non-empty shards `shards` cannot be used,
 * or undefined when it can: its sample counts must be the plan's, its costs
 * and gradients finite.
 */
export function checkRange(shards: readonly ShardRange[], r: RangeResult): RangeProblem | undefined {
  if (r.lo === 0) {
    let n = 0;
    for (let s = 0; s < r.hi; s++) n += shards[s].end - shards[s].start;
    if (r.counts[0] !== n) return "wrong_shard";
  } else {
    for (let s = r.lo; s < r.hi; s++)
      if (r.counts[s - r.lo] !== shards[s].end - shards[s].start) return "wrong_shard";
  }
  for (const c of r.costs) if (!Number.isFinite(c)) return "non_finite";
  const g = r.grads;
  for (let i = 0; i < g.length; i++) if (g[i] - g[i] !== 0) return "non_finite";
  return undefined;
}

/** One step's accepted results, in buffers reused from step to step. */
export class RangeResults {
  private readonly prefixSum: Float64Array;
  private readonly shardGrads: Float32Array[] = [];
  private readonly values = new Map<ShardSpan, { costs: number[]; counts: number[] }>();

  constructor(private readonly paramCount: number) {
    this.prefixSum = new Float64Array(paramCount);
  }

  /** Starts a new step. */
  clear(): void {
    this.values.clear();
  }

  /** Keeps the accepted result `r` of range `u`. */
  keep(u: ShardSpan, r: RangeResult): void {
    const P = this.paramCount;
    if (r.lo === 0) this.prefixSum.set(r.grads as Float64Array);
    else {
      for (let s = r.lo; s < r.hi; s++) {
        this.shardGrads[s] ??= new Float32Array(P);
        this.shardGrads[s].set((r.grads as Float32Array).subarray((s - r.lo) * P, (s - r.lo + 1) * P));
      }
    }
    this.values.set(u, { costs: [...r.costs], counts: [...r.counts] });
  }

  /** The step's gradients for the trainer, once every range in `units` is kept. */
  outcome(units: readonly ShardSpan[], shards: readonly ShardRange[], computeSeconds: number): StepOutcome {
    const results: ShardResult[] = [];
    let prefix: StepOutcome["prefix"];
    for (const u of units) {
      const v = this.values.get(u)!;
      if (u.lo === 0) prefix = { through: u.hi, sum: this.prefixSum, cost: v.costs[0], count: v.counts[0] };
      else
        for (let s = u.lo; s < u.hi; s++)
          results.push({
            shard: shards[s].shard,
            grad: this.shardGrads[s],
            cost: v.costs[s - u.lo],
            count: v.counts[s - u.lo],
          });
    }
    return { results, prefix, computeSeconds };
  }
}
