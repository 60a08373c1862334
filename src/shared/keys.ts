/**
 * Every Redis key and channel a run uses, in one place.
 *
 * All of a run's keys start with `gf:{<runId>}:` — the braces are a Redis
 * Cluster hash tag, so a run's keys (BullMQ's included, through the queue
 * prefix) live in one slot and multi-key scripts work on a cluster. Cleanup
 * after a run is a SCAN of that prefix.
 */

/**
 * The BullMQ queue name of seats (keys `<queuePrefix>:seats:*`): a seat job
 * spans a whole session; the worker that takes it dials the coordinator's
 * data port and gets its steps there (see coordinator/seat-keeper.ts).
 */
export const SEATS_QUEUE_NAME = "seats";

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
  /** The current weights version (integer as a string), written for operators and tests. */
  version: string;
  /** Sorted set of live workers: member = worker id, score = last heartbeat (ms). */
  workers: string;
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
    workers: `${p}:workers`,
  };
}
