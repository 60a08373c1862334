/**
 * Every Redis key and channel a run uses, in one place.
 *
 * All of a run's keys start with `gf:{<runId>}:` — the braces are a Redis
 * Cluster hash tag, so a run's keys (BullMQ's included, through the queue
 * prefix) live in one slot and multi-key scripts work on a cluster. Cleanup
 * after a run is a SCAN of that prefix.
 */

/** The BullMQ queue name of shard jobs (its keys are `<queuePrefix>:grad:*`). */
export const QUEUE_NAME = "grad";

/**
 * The BullMQ queue name of lane jobs (keys `<queuePrefix>:lanes:*`): a lane
 * is a worker's seat at a range of steps, during which it claims shards (see
 * `claim`) instead of taking a job per shard.
 */
export const LANES_QUEUE_NAME = "lanes";

/** A worker counts as live when its last heartbeat in `workers` is at most this old (it beats every 2 s). */
export const LIVE_WORKER_WINDOW_MS = 10_000;

/** Allowed run ids: safe in keys, metrics labels and file names. */
export const RUN_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/** Key names of one run. */
export interface RunKeys {
  /** `gf:{run}` — the BullMQ `prefix` option, so queue keys share the hash tag. */
  queuePrefix: string;
  /** Glob matching every key of the run (for cleanup). */
  all: string;
  /** Coordinator lease: SET NX PX holding the live coordinator's instance id. */
  lease: string;
  /** The run spec (JSON, see run-spec.ts). */
  spec: string;
  /** The current weights version (integer as a string). */
  version: string;
  /** Weights bytes of a version: raw little-endian float32, the flat layout. */
  weights(version: number): string;
  /** A shard's result for a version (msgpackr frame, see messages.ts); first writer wins. */
  result(version: number, shard: number): string;
  /**
   * Claims of a version (a hash, see CLAIM_SHARD): field `n` counts them, the
   * n-th claim takes the n-th non-empty shard of the step (so each shard is
   * claimed once), and field `<index>` names the worker that took it.
   */
  claim(version: number): string;
  /** Glob of every claim counter (cleared when a session starts). */
  allClaims: string;
  /** Glob of every weights key (cleared when a session starts). */
  allWeights: string;
  /** Glob of every result key (cleared when a session starts). */
  allResults: string;
  /**
   * List the coordinator blocks on: one notice per result accepted by the
   * submit script (carrying the result frame itself) or refused by a worker.
   */
  notices: string;
  /** Hash of counters written by workers' scripts (duplicate, stale results). */
  counters: string;
  /** Sorted set of live workers: member = worker id, score = last heartbeat (ms). */
  workers: string;
  /**
   * Pub/sub channel: a new weights version is available. The message carries
   * the weights themselves (see messages.ts, weights announcement), so a
   * worker in a lane needs no read to start the step.
   */
  versionChannel: string;
}

/** Returns the key names of run `runId` (which must match RUN_ID_PATTERN). */
export function runKeys(runId: string): RunKeys {
  if (!RUN_ID_PATTERN.test(runId)) {
    throw new Error(`run id "${runId}" must be 1-64 letters, digits, '-' or '_'`);
  }
  const p = `gf:{${runId}}`;
  return {
    queuePrefix: p,
    all: `${p}:*`,
    lease: `${p}:lease`,
    spec: `${p}:spec`,
    version: `${p}:version`,
    weights: (v) => `${p}:w:${v}`,
    result: (v, s) => `${p}:r:${v}:${s}`,
    claim: (v) => `${p}:c:${v}`,
    allClaims: `${p}:c:*`,
    allWeights: `${p}:w:*`,
    allResults: `${p}:r:*`,
    notices: `${p}:notices`,
    counters: `${p}:counters`,
    workers: `${p}:workers`,
    versionChannel: `${p}:version-events`,
  };
}
