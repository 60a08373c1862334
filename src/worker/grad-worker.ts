/**
 * A gradient worker process's parts, put together: its Redis connections,
 * its heartbeat, the seats queue and the seat handler behind it.
 *
 * The work itself comes over the coordinator's data port: BullMQ hands this
 * worker a *seat* (seat-queue.ts), the seat handler (seat-handler.ts) loads
 * the session the seat belongs to (session-loader.ts) and serves its steps
 * (direct-seat.ts). The worker is stateless apart from caches (the dataset,
 * the session), so workers can join and leave at any time.
 */
import type { Redis } from "ioredis";
import { type RunKeys, runKeys } from "../shared/keys.js";
import type { Logger } from "../shared/log.js";
import { connectRedis, redactUrl, waitForRedis } from "../shared/redis.js";
import { settleWithin } from "../shared/settle-within.js";
import type { Trace } from "../shared/trace.js";
import { DatasetCache } from "./datasets.js";
import { Heartbeat } from "./heartbeat.js";
import type { WorkerObserver } from "./observer.js";
import { RefusalPacer } from "./refusals.js";
import { SeatHandler } from "./seat-handler.js";
import { SeatQueue } from "./seat-queue.js";
import { SessionLoader } from "./session-loader.js";

/** While Redis does not answer at start, say so this often. */
const REDIS_WAIT_LOG_MS = 10_000;
/** How long the last words to Redis (leaving the live set) may take. */
const LAST_WORDS_MS = 3000;

/** Settings of a worker process. */
export interface GradWorkerOptions {
  redisUrl: string;
  redisCa?: string;
  runId: string;
  /** Dataset directory (default: the bundled MNIST). */
  dataDir?: string;
  workerId: string;
  log: Logger;
  observer?: WorkerObserver;
  /** BullMQ lock duration (ms) of a seat. */
  lockDuration?: number;
  /** BullMQ stalled-job check period (ms). */
  stalledInterval?: number;
  /** Spans of direct steps (`--trace`). */
  trace?: Trace;
}

/** A worker process's connection to one run; see the module comment. */
export class GradWorker {
  private readonly keys: RunKeys;
  private readonly redis: Redis;
  private readonly heartbeat: Heartbeat;
  private readonly pacer = new RefusalPacer();
  private readonly datasets: DatasetCache;
  private readonly seats: SeatHandler;
  private queue?: SeatQueue;
  /** The connection BullMQ blocks on; BullMQ does not close connections it was given. */
  private queueConnection?: Redis;

  constructor(private readonly opts: GradWorkerOptions) {
    this.keys = runKeys(opts.runId);
    this.redis = connectRedis(opts.redisUrl, {
      role: "worker",
      caFile: opts.redisCa,
      name: `gf-worker-${opts.workerId}`,
    });
    this.redis.on("error", (e) => opts.log.warn({ err: e.message }, "redis connection error"));
    this.heartbeat = new Heartbeat(this.redis, this.keys, opts.workerId);
    this.datasets = new DatasetCache(opts.dataDir);
    const sessions = new SessionLoader(this.redis, this.keys, opts.runId, this.datasets, opts.log);
    this.seats = new SeatHandler({ ...opts, redis: this.redis, keys: this.keys }, sessions, this.pacer);
  }

  /** Whether the worker's Redis connection is up (for `/readyz`). */
  get redisConnected(): boolean {
    return this.redis.status === "ready";
  }

  /** Ranges of shards this worker computed and sent. */
  get jobsDone(): number {
    return this.seats.rangesDone;
  }

  /** Waits for Redis, starts beating, loads the default dataset, then takes seats. */
  async start(): Promise<void> {
    const o = this.opts;
    await this.waitForRedis();
    // Live from now on, while the dataset loads: a coordinator whose other
    // workers all refuse the run waits for this one.
    this.heartbeat.start(() => {
      this.queue?.watchdog();
      void this.seats.checkSeats();
    });
    // Preload the default dataset so the first session does not wait for it.
    await this.datasets.get(null, null);
    this.queueConnection = this.redis.duplicate();
    this.queue = new SeatQueue(
      {
        keys: this.keys,
        workerId: o.workerId,
        log: o.log,
        where: redactUrl(o.redisUrl),
        lockDuration: o.lockDuration ?? 30_000,
        stalledInterval: o.stalledInterval ?? 5_000,
      },
      this.queueConnection,
      (job) => this.seats.take(job),
    );
    o.observer?.onReady?.(true);
    o.log.info({ run: o.runId }, "worker ready");
  }

  /**
   * Waits until Redis answers. Wrong credentials never fix themselves, so
   * they fail at once with a clear message (BullMQ would retry them forever);
   * an unreachable Redis is waited for, since a worker may start before it.
   */
  private async waitForRedis(): Promise<void> {
    for (;;) {
      try {
        await waitForRedis(this.redis, REDIS_WAIT_LOG_MS);
        return;
      } catch (e) {
        if (this.redis.status === "end" || /\b(WRONGPASS|NOAUTH|NOPERM)\b/.test((e as Error).message))
          throw e;
        this.opts.log.warn({ err: (e as Error).message }, "still waiting for Redis");
      }
    }
  }

  /**
   * Graceful stop: leaves its seat (computing what the coordinator already
   * sent, until it lets go), then disconnects; bounded by `graceMs`.
   */
  async close(graceMs = 10_000): Promise<void> {
    this.heartbeat.stop();
    this.opts.observer?.onReady?.(false);
    this.pacer.close();
    this.seats.close();
    const graceful = (await this.queue?.close(graceMs)) ?? true;
    if (!graceful) {
      this.opts.log.warn(
        { graceMs },
        "could not leave the seat in time (the coordinator did not release it, or Redis is unreachable); closing anyway",
      );
    } else {
      // Bounded: this connection waits for Redis for ever (workers' role).
      await settleWithin(this.heartbeat.leave(), LAST_WORDS_MS);
    }
    this.queueConnection?.disconnect();
    this.redis.disconnect();
  }
}
