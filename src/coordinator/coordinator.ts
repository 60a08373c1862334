/**
 * A coordinator run: connects to Redis, takes the run's lease, publishes the
 * run spec, runs the training session with the DirectExecutor (steps over
 * the data port) and cleans the run's keys up at the end. Used by `gradfleet coordinator` and by
 * `train --workers N`.
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { Redis } from "ioredis";
import { runSession, type SessionArgs, type SessionOutcome } from "../run/session.js";
import type { RunOptions } from "../shared/command-options.js";
import { runKeys } from "../shared/keys.js";
import {
  checkRedisConfig,
  connectRedis,
  explainRedisFull,
  redactUrl,
  waitForRedis,
} from "../shared/redis.js";
import type { Trace } from "../shared/trace.js";
import { ClusterStats } from "./cluster-stats.js";
import { DirectExecutor } from "./direct-executor.js";
import { Lease, LeaseLostError } from "./lease.js";

/** Everything a coordinator run needs. */
export interface CoordinatorRun {
  options: Pick<RunOptions, "trainLimit" | "testLimit"> & {
    redisUrl: string;
    redisCa?: string;
    runId: string;
    stepTimeout: number;
    /** The data port's listen address and port, and the address workers dial. */
    dataHost: string;
    dataPort: number;
    advertiseHost: string;
    /** `--min-workers`: workers that must join before the first step. */
    minWorkers: number;
    /** `--shm-dir`: where workers on this host share memory with the coordinator ("none": nowhere). */
    shmDir: string;
  };
  /**
   * The session to run once the run is published (its executor is the
   * cluster's); its stop signal also stops a run that is still being published.
   */
  session: Omit<SessionArgs, "executor">;
  stats?: ClusterStats;
  /** Called once the run is published (spec in Redis, lease held), with the coordinator's Redis connection. */
  onStarted?(executor: DirectExecutor, redis: Redis): void;
  /** The run's trace (`--trace`), when set. */
  trace?: Trace;
}

/** How a coordinator run ended: the session's outcome, and the cluster's counters for the summary. */
export interface CoordinatorOutcome {
  outcome: SessionOutcome;
  cluster: Record<string, unknown>;
}

/** Runs training as the coordinator of a cluster. */
export async function runCoordinator(r: CoordinatorRun): Promise<CoordinatorOutcome> {
  const o = r.options;
  const log = r.session.log;
  const keys = runKeys(o.runId);
  const redis = connectRedis(o.redisUrl, {
    role: "producer",
    caFile: o.redisCa,
    name: `gf-coordinator-${o.runId}`,
  });
  redis.on("error", (e) => log.debug({ err: e.message }, "redis connection error"));
  // A stop signal while the run is being published is kept for the trainer
  // (which stops at once, with a checkpoint), not left to kill the process.
  const unlistenEarly = r.session.stop.listenToProcess();
  let lease: Lease | undefined;
  let executor: DirectExecutor | undefined;
  try {
    await waitForRedis(redis, 10_000);
    const warning = await checkRedisConfig(redis);
    if (warning) log.warn(warning);
    const owner = `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
    lease = await Lease.acquire(redis, keys.lease, owner, o.runId, () =>
      log.warn("the run's lease is held by another coordinator; waiting a few seconds in case it died"),
    );
    const stats = r.stats ?? new ClusterStats();
    executor = new DirectExecutor({
      runId: o.runId,
      keys,
      redis,
      config: r.session.config,
      data: r.session.data,
      trainLimit: o.trainLimit ?? null,
      testLimit: o.testLimit ?? null,
      log,
      stepTimeoutSeconds: o.stepTimeout,
      stats,
      listenHost: o.dataHost,
      listenPort: o.dataPort,
      advertiseHost: o.advertiseHost,
      minWorkers: o.minWorkers,
      shmDir: o.shmDir === "none" ? undefined : o.shmDir,
      trace: r.trace,
    });
    const ex0 = executor;
    lease.onLost = (holder) =>
      ex0.fail(
        new LeaseLostError(
          `lost the run's lease to another coordinator (${holder ?? "unknown"}): this one was paused or cut off ` +
            "for longer than the lease's 5 s; stopping at once and leaving the run to it",
        ),
      );
    await executor.open();
    log.info(
      {
        run: o.runId,
        session: executor.spec.session,
        redis: redactUrl(o.redisUrl),
        dataPort: executor.port,
      },
      "run published; waiting for workers",
    );
    r.onStarted?.(executor, redis);
    // The session listens from its first (synchronous) line; only then is the
    // early hold let go, so that a signal is never without a listener.
    const session = runSession({ ...r.session, executor });
    unlistenEarly();
    const outcome = await session;
    const cluster = {
      runId: o.runId,
      workersSeen: stats.workersSeen.size,
      sharedMemoryWorkers: stats.sharedMemoryWorkers.size,
      sharedMemoryResults: stats.sharedMemoryResults,
      duplicateResults: stats.duplicateResults,
      staleResults: stats.staleResults,
      rejectedResults: stats.rejectedResults,
      rejectedByReason: Object.fromEntries(stats.rejected),
      retriedShards: stats.retriedShards,
    };
    return { outcome, cluster };
  } catch (e) {
    // A full Redis answers every write with its raw "OOM command not
    // allowed" text, which names no setting to change: say which.
    throw explainRedisFull(e, o.redisUrl);
  } finally {
    unlistenEarly();
    // A coordinator that lost its lease leaves the run's keys to the one that took it.
    await executor
      ?.close(!lease?.lost)
      .catch((e) => log.warn({ err: (e as Error).message }, "cleanup failed"));
    await lease?.release();
    redis.disconnect();
  }
}
