/**
 * What a RESULT frame becomes. It is decoded (one that does not decode drops
 * its worker) and matched to a range of the step in hand: one of an old
 * version is stale, a copy of a range already accepted a duplicate (a late
 * worker's), both dropped and counted. Then it is checked and copied out of
 * its frame (RangeResults) and accepted, or refused and its range computed
 * again: a wrong sample count always, a non-finite gradient once (a second
 * non-finite one is divergence: it goes to the trainer, which stops the run).
 */
import type { Logger } from "../shared/log.js";
import { decodeResult, type RangeResult } from "../shared/step-frames.js";
import type { ClusterStats } from "./cluster-stats.js";
import { checkRange, type RangeResults } from "./range-results.js";
import type { StepDispatch, StepLink } from "./step-dispatch.js";

/** Takes the RESULT frames of a session's steps. */
export class ResultIntake {
  /**
   * @param kept where accepted results are kept for the trainer (cleared by
   *   the executor at each step)
   */
  constructor(
    private readonly paramCount: number,
    private readonly kept: RangeResults,
    private readonly stats: ClusterStats,
    private readonly log: Logger,
  ) {}

  /** A RESULT frame's body from worker `l`, with `step` the step in hand (undefined between steps). */
  take<L extends StepLink>(l: L, body: Buffer, step: StepDispatch<L> | undefined): void {
    let r: RangeResult;
    try {
      r = decodeResult(body, this.paramCount);
    } catch (e) {
      this.stats.countRejected("decode");
      this.log.error(
        { worker: l.workerId, err: (e as Error).message },
        "refused a malformed result; dropping the worker",
      );
      l.close("malformed result");
      return;
    }
    l.late = false;
    if (!step || r.version !== step.req.version) {
      this.stats.staleResults++;
      return;
    }
    const u = step.round.unit(r.lo, r.hi);
    if (!u) {
      this.stats.countRejected("wrong_shard");
      this.log.error(
        { worker: l.workerId, lo: r.lo, hi: r.hi },
        "refused a result for shards nobody asked for",
      );
      return;
    }
    if (u.done) {
      this.stats.duplicateResults++;
      return;
    }
    const k = step.req.shards.length;
    const problem = checkRange(step.req.shards, r);
    // Staged also when a cost is not finite: kept after a recompute (divergence),
    // its blocks go to the trainer, which adds them up before it looks at the cost.
    const finite = problem === "wrong_shard" || this.kept.stage(r, k);
    const why = problem ?? (finite ? undefined : "non_finite");
    if (why === "wrong_shard") {
      this.stats.countRejected(why);
      this.log.error(
        { worker: l.workerId, lo: r.lo, hi: r.hi },
        "refused a result with the wrong sample counts",
      );
      step.again(u, l);
      return;
    }
    if (why === "non_finite" && !step.nonFinite.has(u)) {
      // Once more, elsewhere if possible: a worker's fault, or divergence
      // (then the recompute is not finite either, and the trainer stops).
      this.stats.countRejected(why);
      step.nonFinite.add(u);
      this.log.warn(
        { worker: l.workerId, lo: r.lo, hi: r.hi, reason: "non_finite" },
        "refused a non-finite result; computing it again",
      );
      step.again(u, l);
      return;
    }
    if (why === "non_finite") {
      // The recompute is not finite either: the training diverged. The
      // trainer gets it, checkpoints the last good weights and stops the run.
      this.log.error(
        { worker: l.workerId, lo: r.lo, hi: r.hi },
        "non-finite gradient again after a recompute",
      );
    }
    this.kept.keep(u, r, k);
    step.accept(u, l, r.computeSeconds);
  }
}
