/**
 * Counters of what the cluster did during a run, for the `--json` summary
 * and for metrics.
 */

import type { RejectLabel } from "../shared/reasons.js";

/** Cluster counters, updated by the DirectExecutor's parts (step dispatch, result intake, refusal watch). */
export class ClusterStats {
  /** Distinct worker ids that delivered an accepted result. */
  readonly workersSeen = new Set<string>();
  /** Distinct worker ids that joined taking the weights and leaving results in shared memory (`--shm-dir`). */
  readonly sharedMemoryWorkers = new Set<string>();
  /** Results read from workers' result files in shared memory (the others came in frames). */
  sharedMemoryResults = 0;
  /** Results dropped because their range of the step already had one (a late copy). */
  duplicateResults = 0;
  /** Results dropped because they were for an old weights version. */
  staleResults = 0;
  /** Results refused by reason (decode, wrong_shard, non_finite; spec_mismatch and refused for workers' refusals). */
  readonly rejected = new Map<RejectLabel, number>();
  /** Shards sent again (their worker left or missed the deadline, or the result was refused). */
  retriedShards = 0;

  /** Total results refused, all reasons. */
  get rejectedResults(): number {
    let n = 0;
    for (const v of this.rejected.values()) n += v;
    return n;
  }

  /** One more result (or refusal) rejected for `reason`. */
  countRejected(reason: RejectLabel): void {
    this.rejected.set(reason, (this.rejected.get(reason) ?? 0) + 1);
  }
}
