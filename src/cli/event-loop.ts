/**
 * In-process training (`train --workers 0`) never waits for anything: every
 * `await` of the trainer resolves at once, so the event loop never reaches
 * its I/O phase and an HTTP server in the same process (the live page,
 * /metrics) would not answer until the run ends. This wrapper gives the
 * event loop a turn between steps, at most every few milliseconds, so the
 * cost stays far below a step's. It only changes WHEN a step starts, never
 * what it computes: the bits are the same.
 */
import type { GradientExecutor } from "../core/trainer.js";

/** How often the event loop gets a turn by default: 25 ms keeps a page fluid and costs ~nothing. */
export const DEFAULT_TURN_EVERY_MS = 25;

/**
 * The executor, with a `setImmediate` turn of the event loop before a step
 * when at least `everyMs` passed since the last turn.
 */
export function withEventLoopTurns(
  executor: GradientExecutor,
  everyMs = DEFAULT_TURN_EVERY_MS,
): GradientExecutor {
  let last = performance.now();
  return {
    heap: executor.heap,
    computeStep: async (req) => {
      const now = performance.now();
      if (now - last >= everyMs) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        last = performance.now();
      }
      return executor.computeStep(req);
    },
  };
}
