/**
 * The coordinator's side in Redis: the run spec and the seats. BullMQ hands
 * out the work as *seats* (jobs named `seat` that span the whole session);
 * a worker that takes one dials the coordinator's data port. The keeper
 * publishes the spec, keeps a seat waiting while there is room for another
 * worker, publishes the spec again if Redis lost or someone overwrote it,
 * writes the current version for operators, and clears the seats at the end.
 */
import { Queue } from "bullmq";
import type { Redis } from "ioredis";
import { type RunKeys, SEATS_QUEUE_NAME } from "../shared/keys.js";
import type { Logger } from "../shared/log.js";
import type { RunSpec } from "../shared/run-spec.js";
import type { SeatJob } from "../shared/seat-job.js";

/** Most seats: more workers than shards could not share a step. */
export const MAX_SEATS = 64;
/** How often the keeper looks at the run's spec and waiting seats. */
const KEEPER_MS = 1000;
/** How long closing waits for workers to give their seats back. */
const CLOSE_WAIT_MS = 2000;
/** Least time between two writes of the current version to Redis (see noteVersion). */
const VERSION_MS = 100;

/** Publishes a session in Redis and keeps its seats. */
export class SeatKeeper {
  /** The seats' queue (metrics count its jobs). */
  readonly queue: Queue;
  private timer?: NodeJS.Timeout;
  private added = 0;
  private specJson = "";
  private versionNotedAt = 0;

  /**
   * @param connected how many workers are connected now (no seat is added past MAX_SEATS)
   */
  constructor(
    private readonly redis: Redis,
    private readonly keys: RunKeys,
    private readonly log: Logger,
    private readonly connected: () => number,
  ) {
    this.queue = new Queue(SEATS_QUEUE_NAME, {
      connection: redis,
      prefix: keys.queuePrefix,
      defaultJobOptions: { removeOnComplete: true, removeOnFail: 100, attempts: 1 },
    });
    this.queue.on("error", (e) => log.warn({ err: e.message }, "bullmq seats queue error"));
  }

  /**
   * Clears what an earlier session of this run id left, publishes `spec`,
   * adds `seats` seats and starts keeping them.
   */
  async open(spec: RunSpec, seats: number): Promise<void> {
    const { redis, keys } = this;
    this.specJson = JSON.stringify(spec);
    await redis.del(keys.version);
    await this.queue.drain(true);
    await redis.set(keys.spec, this.specJson);
    await this.add(spec.session, Math.min(seats, MAX_SEATS));
    this.timer = setInterval(() => void this.keep(spec.session), KEEPER_MS);
    this.timer.unref();
  }

  /** The version in Redis for operators and tests to follow progress: at most every VERSION_MS. */
  noteVersion(version: number): void {
    const now = Date.now();
    if (now - this.versionNotedAt < VERSION_MS) return;
    this.versionNotedAt = now;
    this.redis.set(this.keys.version, String(version)).catch(() => {});
  }

  /** Stops keeping seats; waiting ones go too when the run is ours to clean (`cleanup`). */
  async stop(cleanup: boolean): Promise<void> {
    clearInterval(this.timer);
    // A worker whose seat ends would take the next one; after a lost lease
    // the queue is the new coordinator's, so it is left alone.
    if (cleanup) await this.queue.drain(true).catch(() => {});
  }

  /**
   * After the workers were told the run is over: waits for them to give their
   * seats back (else each logs BullMQ's "Missing key for job"), then with
   * `cleanup` deletes the queue and every key of the run.
   */
  async close(cleanup: boolean): Promise<void> {
    if (cleanup) {
      await until(async () => (await this.queue.getActiveCount().catch(() => 0)) === 0, CLOSE_WAIT_MS);
      await this.queue.obliterate({ force: true }).catch(() => {});
      await deleteRunKeys(this.redis, this.keys.all).catch(() => {});
    }
    await this.queue.close();
  }

  /** Adds `n` seats (jobs that span the session) for workers to take. */
  private async add(session: string, n: number): Promise<void> {
    const data: SeatJob = { session };
    const jobs = Array.from({ length: n }, () => ({
      name: "seat",
      data,
      opts: { jobId: `${session}-seat-${this.added++}` },
    }));
    await this.queue.addBulk(jobs);
  }

  /**
   * Once a second: the run spec must still be in Redis as published (a
   * restarted or flushed Redis loses it: publish again), and a seat must be
   * waiting while fewer workers than seats are connected (seats are used up
   * by workers that leave, refuse, or cannot reach the data port).
   */
  private async keep(session: string): Promise<void> {
    const { redis, keys, log } = this;
    try {
      const spec = await redis.get(keys.spec);
      if (spec !== this.specJson) {
        log.warn(
          { key: keys.spec },
          spec === null
            ? "the run spec vanished from Redis; publishing it again"
            : "the run spec in Redis was overwritten; publishing it again",
        );
        await redis.set(keys.spec, this.specJson);
      }
      if (this.connected() >= MAX_SEATS) return;
      if ((await this.queue.getWaitingCount()) === 0) await this.add(session, 1);
    } catch (e) {
      log.debug({ err: (e as Error).message }, "seat keeper: Redis did not answer");
    }
  }
}

/** Deletes every key matching the run's pattern (SCAN, not KEYS, to never block Redis). */
export async function deleteRunKeys(redis: Redis, pattern: string): Promise<number> {
  let cursor = "0";
  let n = 0;
  do {
    const [next, batch] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 500);
    cursor = next;
    if (batch.length) n += await redis.unlink(...batch);
  } while (cursor !== "0");
  return n;
}

/** Resolves once `done()` is true (checked every 20 ms), or after `ms`. */
export async function until(done: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!(await done()) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
}
