/**
 * A worker's heartbeat in the run's live-workers set: the coordinator stops a
 * run that every live worker refuses, so a worker is live from the moment
 * Redis answers, before its dataset has loaded (a good worker still starting
 * keeps the run waiting for it).
 */
import type { Redis } from "ioredis";
import type { RunKeys } from "../shared/keys.js";

/** Heartbeat period. */
export const HEARTBEAT_MS = 2000;
/** The live-workers set expires when no worker beats for this long (the run is gone). */
const SET_TTL_MS = 60_000;

/** Beats every HEARTBEAT_MS until stopped; see the module comment. */
export class Heartbeat {
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly redis: Redis,
    private readonly keys: RunKeys,
    private readonly workerId: string,
  ) {}

  /** Beats now and every HEARTBEAT_MS; `alsoEachBeat` runs with each later beat (the worker's periodic checks). */
  start(alsoEachBeat: () => void): void {
    this.beat();
    this.timer = setInterval(() => {
      this.beat();
      alsoEachBeat();
    }, HEARTBEAT_MS);
  }

  /** Stops beating. */
  stop(): void {
    clearInterval(this.timer);
  }

  /** Takes this worker out of the live set (it is leaving). */
  async leave(): Promise<void> {
    await this.redis.zrem(this.keys.workers, this.workerId);
  }

  private beat(): void {
    // A failed beat (Redis down or full) is no news: the next one tries again.
    this.redis
      .multi()
      .zadd(this.keys.workers, Date.now(), this.workerId)
      .pexpire(this.keys.workers, SET_TTL_MS)
      .exec()
      .catch(() => {});
  }
}
