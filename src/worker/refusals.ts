/**
 * Why a worker does not serve a seat, and the pace of its "cannot serve"
 * refusals.
 */
import type { RefusalReason } from "../shared/reasons.js";

/**
 * This worker cannot serve the published session at all (other data, a
 * spec it cannot take): found when loading the session and true for all of
 * it, so the verdict is remembered per session and said to the coordinator.
 */
export class CannotServe extends Error {
  constructor(
    readonly reason: RefusalReason,
    message: string,
  ) {
    super(message);
  }
}

/** A seat of another session than the published one: a dead coordinator's leftover, ended quietly. */
export class OtherSession extends Error {}

/** No run spec in Redis (the run is over, or Redis restarted empty): no session to serve now. */
export class NoRunSpec extends Error {}

/** Least time between two "cannot serve" refusals of one worker (see RefusalPacer). */
export const REFUSAL_PAUSE_MS = 1000;

/**
 * Paces a worker's "cannot serve" refusals to one per REFUSAL_PAUSE_MS, and
 * owns the pauses a worker takes, so that closing cuts them all short.
 *
 * Why pace: a refused seat is added again by the coordinator's seat keeper;
 * a worker that took it straight back would refuse the session many times a
 * second, for nothing (the coordinator already knows) and at the cost of CPU
 * and log lines. The coordinator stops a run that every live worker refuses
 * (see coordinator/refusing-fleet.ts).
 */
export class RefusalPacer {
  private last: Promise<void> = Promise.resolve();
  private readonly sleepers = new Set<() => void>();
  private closed = false;

  /** Resolves when it is this refusal's turn: at once for the first, then a pause after the previous one. */
  turn(): Promise<void> {
    const mine = this.last;
    this.last = mine.then(() => this.pause(REFUSAL_PAUSE_MS));
    return mine;
  }

  /** Resolves after `ms`, or at once once {@link close} was called. */
  pause(ms: number): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleepers.add(wake);
    });
  }

  /** Ends every pause now and every later one at once (the worker is closing). */
  close(): void {
    this.closed = true;
    for (const wake of [...this.sleepers]) wake();
  }
}
