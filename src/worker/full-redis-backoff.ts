/**
 * Backing off from a full Redis. A Redis at its `maxmemory` with
 * `maxmemory-policy noeviction` answers every write with "OOM command not
 * allowed", at once: BullMQ's worker loop takes that as a failed fetch and
 * asks again straight away, which was 100 % CPU and tens of thousands of
 * identical log lines a second, for as long as Redis stayed full. Waiting
 * is the only thing that helps (someone must free memory or raise the limit),
 * so wait, exponentially longer, and say once per wait what is wrong.
 */
import type { Logger } from "../shared/log.js";
import { redisFullMessage } from "../shared/redis.js";

/** The first wait after Redis said it is full. */
export const FIRST_WAIT_MS = 1000;
/** The longest wait: Redis may be given memory any time, so look again at least this often. */
export const LONGEST_WAIT_MS = 30_000;

/** Exponential back-off windows while Redis is full; see the module comment. */
export class FullRedisBackoff {
  private waitMs = FIRST_WAIT_MS;
  private timer?: NodeJS.Timeout;

  /**
   * @param where the Redis, as shown in messages (no credentials)
   * @param pause stops what spins (BullMQ's fetching)
   * @param resume starts it again
   */
  constructor(
    private readonly where: string,
    private readonly log: Logger,
    private readonly pause: () => void,
    private readonly resume: () => void,
  ) {}

  /** Whether a back-off window is open now. */
  get waiting(): boolean {
    return this.timer !== undefined;
  }

  /**
   * Redis refused a write for lack of memory: unless a window is open
   * already, pause, say so in one line, and resume when the window ends;
   * each window twice the last, up to LONGEST_WAIT_MS.
   */
  full(): void {
    if (this.timer) return;
    this.log.error({ retryInSeconds: this.waitMs / 1000 }, redisFullMessage(this.where));
    this.pause();
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.resume();
    }, this.waitMs);
    this.timer.unref();
    this.waitMs = Math.min(this.waitMs * 2, LONGEST_WAIT_MS);
  }

  /** Redis took a write again: the next full Redis starts from the first wait. */
  recovered(): void {
    if (!this.timer) this.waitMs = FIRST_WAIT_MS;
  }

  /** Ends the open window without resuming (the worker is closing). */
  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
