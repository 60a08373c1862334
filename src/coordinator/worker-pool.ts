/**
 * The workers connected to the coordinator's data port, as the
 * DirectExecutor shares steps among them: who is open, late or leaving, how
 * many ranges of the step in hand each holds, whom a new step goes to and
 * whom a range goes to next. Pure bookkeeping: the links are the
 * StepServer's, and the only thing done to one here is letting a leaving
 * worker go.
 */
import type { StepRound } from "./step-round.js";

/** What the pool reads and keeps of a worker's connection (a WorkerLink; tests use plain objects). */
export interface PoolLink {
  readonly workerId: string;
  /** Ranges of the step in hand it holds: sent to it, not back yet, not sent to another since. */
  busy: number;
  /** The connection is gone or being ended. */
  closed: boolean;
  /** Missed a deadline and has not answered since: given no new work while others can take it. */
  late: boolean;
  /** Said it is leaving: gets no new work, and is let go once its work is back. */
  leaving: boolean;
  /** Bytes written to the connection that the kernel has not taken yet. */
  readonly unsent: number;
  /** Ends the connection, telling the worker why. */
  close(reason: string): void;
}

/** The joined workers of one session, in the order they joined. */
export class WorkerPool<L extends PoolLink> {
  readonly links: L[] = [];

  /** How many workers are joined (closing ones too, until the server reports them gone). */
  get size(): number {
    return this.links.length;
  }

  /** Worker `l` joined. */
  add(l: L): void {
    this.links.push(l);
  }

  /** Takes worker `l` out; false when it was not in (it never joined, or is out already). */
  remove(l: L): boolean {
    const i = this.links.indexOf(l);
    if (i < 0) return false;
    this.links.splice(i, 1);
    return true;
  }

  /** Whether some connection still holds bytes the kernel has not taken (an earlier step's weights, say). */
  anyUnsent(): boolean {
    for (const l of this.links) if (l.unsent > 0) return true;
    return false;
  }

  /**
   * The workers to share a new step among, in join order: the open ones
   * (not closed, not leaving), without those that missed a deadline and have
   * not answered since (frozen, say) as long as another can take the step.
   */
  forStep(): L[] {
    let prompt = 0;
    for (const l of this.links) if (open(l) && !l.late) prompt++;
    const out: L[] = [];
    for (const l of this.links) if (open(l) && (prompt === 0 || !l.late)) out.push(l);
    return out;
  }

  /** The least busy open worker other than `not`, one that is not late before one that is. */
  pick(not?: L): L | undefined {
    let best: L | undefined;
    for (const l of this.links) {
      if (l === not || !open(l)) continue;
      if (!best || (best.late && !l.late) || (best.late === l.late && l.busy < best.busy)) best = l;
    }
    return best;
  }

  /** Lets a leaving worker go once it holds nothing of `round` (a graceful leave costs no retry). */
  releaseIfIdle(l: L, round: StepRound<L> | undefined): void {
    if (!l.leaving) return;
    if (round && round.heldBy(l).length > 0) return;
    l.close("released");
  }
}

/** Whether a worker may be given work: connected and not leaving. */
function open(l: PoolLink): boolean {
  return !l.closed && !l.leaving;
}
