/**
 * Counters of what the cluster did during a run, for the `--json` summary
 * and for metrics.
 */
import type { RejectReason } from "../shared/messages.js";

/** Why a result was refused by the coordinator or a worker. */
export type RejectionReason = RejectReason | "refused";

/** Cluster counters, updated by the ClusterExecutor. */
export class ClusterStats {
  /** Distinct worker ids that delivered an accepted result. */
  readonly workersSeen = new Set<string>();
  /** Results dropped because the shard already had one (counted by the workers' submit script). */
  duplicateResults = 0;
  /** Results dropped because they were for an old weights version. */
  staleResults = 0;
  /** Results refused by reason (decode, bad_length, non_finite, spec_mismatch, ...). */
  readonly rejected = new Map<string, number>();
  /** Shards enqueued again (deadline passed, or the result was refused). */
  retriedShards = 0;

  /** Total results refused, all reasons. */
  get rejectedResults(): number {
    let n = 0;
    for (const v of this.rejected.values()) n += v;
    return n;
  }

  countRejected(reason: string): void {
    this.rejected.set(reason, (this.rejected.get(reason) ?? 0) + 1);
  }
}
