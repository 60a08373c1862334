/** What a worker reports to its metrics (see metrics.ts). */

/** Outcome of one seat's range of shards, or of a refusal, for metrics. */
export type ShardOutcome = "ok" | "refused";

/** Callbacks for metrics; all optional. */
export interface WorkerObserver {
  /** A range computed and sent (`ok`: its compute seconds and bytes), or a session refused. */
  onShard?(outcome: ShardOutcome, computeSeconds: number, bytesOut: number): void;
  /** The worker takes seats (true) or stopped (false). */
  onReady?(ready: boolean): void;
}
