/**
 * The worker's side of the BullMQ seats queue: one BullMQ Worker that takes
 * one seat at a time (a seat computes whatever ranges its coordinator sends,
 * so a second seat in the same process would only take one another process
 * could use), restarted when BullMQ's loop dies, paused while Redis is full,
 * and closed with a bound.
 */
import { type Job, Worker } from "bullmq";
import type { Redis } from "ioredis";
import { type RunKeys, SEATS_QUEUE_NAME } from "../shared/keys.js";
import type { Logger } from "../shared/log.js";
import { isRedisFull } from "../shared/redis.js";
import { settleWithin } from "../shared/settle-within.js";
import { FullRedisBackoff } from "./full-redis-backoff.js";

/** How long a forced close may take. */
const FORCE_CLOSE_MS = 3000;

/** Settings of the seats queue's worker. */
export interface SeatQueueOptions {
  keys: RunKeys;
  workerId: string;
  log: Logger;
  /** The Redis, as shown in messages (no credentials). */
  where: string;
  /** BullMQ lock duration (ms) of a seat: a killed worker's seat comes back after it. */
  lockDuration: number;
  /** BullMQ stalled-job check period (ms). */
  stalledInterval: number;
}

/** The seats queue's BullMQ worker; see the module comment. */
export class SeatQueue {
  private readonly worker: Worker;
  private readonly backoff: FullRedisBackoff;
  private closing = false;

  /**
   * Starts taking seats at once.
   * @param connection the connection BullMQ blocks on (a `worker`-role client; the caller disconnects it)
   * @param take the processor of a seat job
   */
  constructor(
    private readonly o: SeatQueueOptions,
    connection: Redis,
    take: (job: Job<unknown>) => Promise<string>,
  ) {
    // Its name is the worker id, which BullMQ records on every job it takes
    // (processedBy): who holds which seat.
    this.worker = new Worker(SEATS_QUEUE_NAME, take, {
      connection,
      prefix: o.keys.queuePrefix,
      name: o.workerId,
      concurrency: 1,
      lockDuration: o.lockDuration,
      stalledInterval: o.stalledInterval,
      maxStalledCount: 5,
      removeOnComplete: { count: 0 },
      removeOnFail: { count: 100 },
    });
    const w = this.worker;
    this.backoff = new FullRedisBackoff(
      o.where,
      o.log,
      () => void w.pause(true).catch(() => {}),
      () => {
        if (!this.closing) w.resume();
      },
    );
    w.on("error", (e) => {
      if (isRedisFull(e)) this.backoff.full();
      else o.log.warn({ err: e.message }, "bullmq worker error");
    });
    w.on("active", () => this.backoff.recovered());
    w.on("failed", (job, e) => o.log.warn({ job: job?.id, err: e.message }, "seat job failed"));
  }

  /**
   * BullMQ workers have been seen to stop taking jobs after their Redis
   * restarted (taskforcesh/bullmq issues 648, 2466, 2964): its main loop ends
   * on an error and is not restarted. Restart it ourselves (not while it is
   * paused on purpose, for a full Redis).
   */
  watchdog(): void {
    const w = this.worker;
    if (this.closing || w.isRunning() || w.closing || w.isPaused() || this.backoff.waiting) return;
    this.o.log.warn(
      "the BullMQ worker of the seats queue stopped taking jobs (Redis restarted?); restarting it",
    );
    w.run().catch((e) =>
      this.o.log.warn({ err: (e as Error).message }, "restarting the BullMQ worker failed"),
    );
  }

  /**
   * Takes no new seat, and waits for the seat in hand to end (its worker has
   * been told to leave it), for at most `graceMs`; then closes by force.
   * Resolves true when the seat in hand ended in time.
   */
  async close(graceMs: number): Promise<boolean> {
    this.closing = true;
    this.backoff.close();
    const graceful =
      (await settleWithin(
        this.worker.close().then(() => true),
        graceMs,
      )) === true;
    // A forced close has been seen to wait for ever too (a BullMQ worker
    // whose loop was restarted after Redis restarted): bounded as well.
    if (!graceful) await settleWithin(this.worker.close(true), FORCE_CLOSE_MS);
    return graceful;
  }
}
