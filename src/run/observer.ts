/**
 * What a run reports as it goes, to whoever watches it: the progress line,
 * metrics, the live page, the trace. One interface for all of them: the
 * trainer's own hooks (core's `TrainerHooks`, `onStep` and `onEpoch`, passed
 * through as they are) and the checkpoints the session writes.
 */
import type { TrainerHooks } from "../core/trainer.js";
import { type Trace, traceNow } from "../shared/trace.js";

/** An observer of a run; every method is optional. */
export interface RunObserver extends Pick<TrainerHooks, "onStep" | "onEpoch"> {
  /** After every checkpoint written: how long it took and its size. */
  onCheckpoint?(seconds: number, bytes: number): void;
}

/** One observer that forwards to several, in order; undefined entries are skipped. */
export function combineObservers(...list: (RunObserver | undefined)[]): RunObserver {
  const obs = list.filter((o): o is RunObserver => o !== undefined);
  return {
    onStep: (info) => {
      for (const o of obs) o.onStep?.(info);
    },
    onEpoch: (info) => {
      for (const o of obs) o.onEpoch?.(info);
    },
    onCheckpoint: (seconds, bytes) => {
      for (const o of obs) o.onCheckpoint?.(seconds, bytes);
    },
  };
}

/**
 * The trainer's side of a step in the trace: the step, the wait for its
 * gradients (computed here in process, or the cluster's), and the combine +
 * optimizer update.
 */
export function traceObserver(trace: Trace): RunObserver {
  return {
    onStep: (info) => {
      const now = traceNow();
      const t = info.timing;
      const start = now - t.total * 1e6;
      trace.span(`step ${info.updates - 1}`, start, now, { epoch: info.epoch + 1, step: info.step + 1 });
      trace.span("gradients", start, start + (t.compute + t.communication) * 1e6, {
        computeMs: t.compute * 1000,
      });
      trace.span("combine + update", now - t.update * 1e6, now);
    },
  };
}
