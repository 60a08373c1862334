/**
 * A training session: the train loop over a given GradientExecutor, with
 * checkpoints, a graceful stop on SIGINT/SIGTERM and the model file at the
 * end, ending in a value that says how it went. `train --workers 0`,
 * `train --workers N` and `coordinator` all train here; what is printed and
 * which exit code that makes is the CLI's business (src/cli/run-report.ts).
 */
import { saveCheckpoint } from "../core/checkpoint.js";
import type { DataBundle } from "../core/dataset.js";
import { type RunConfig, weightsSha256 } from "../core/run-config.js";
import {
  DivergenceError,
  type GradientExecutor,
  runTraining,
  type TrainResult,
  type TrainState,
} from "../core/trainer.js";
import type { Logger } from "../shared/log.js";
import type { RunObserver } from "./observer.js";
import { type SavedModel, saveModelOrElsewhere } from "./output-paths.js";
import { type PhaseStats, StepTimings } from "./step-timings.js";
import type { StopSignal } from "./stop-signal.js";

/** Everything a session needs. */
export interface SessionArgs {
  config: RunConfig;
  data: DataBundle;
  executor: GradientExecutor;
  /** The state to resume from; a fresh run without. */
  state?: TrainState;
  /** Where checkpoints go; none are written without. */
  checkpointDir?: string;
  /** A checkpoint every this many updates (and at each epoch's end); 0: at epoch ends only. */
  checkpointEvery: number;
  /** Where the model goes at the end; not written without. */
  out?: string;
  log: Logger;
  observer?: RunObserver;
  /** The run's stop signal; the session listens to the process's signals while it trains. */
  stop: StopSignal;
}

/** How a session ended. */
export type SessionOutcome =
  | {
      /** Trained to the end, or to a graceful stop (`result.stopped`). */
      kind: "trained";
      result: TrainResult;
      weightsSha256: string;
      /** Where the model went (undefined without `out`). */
      saved?: SavedModel;
      /** Where a resumed run started. */
      resumedFrom: { epoch: number; step: number } | null;
      /** Median, p95 and mean of each step phase, in ms. */
      stepMs: Record<string, PhaseStats>;
    }
  | {
      /** A step's gradient was not finite: nothing was saved but the checkpoints. */
      kind: "diverged";
      error: DivergenceError;
      /** The last checkpoint written (the last good weights), if any. */
      lastCheckpoint?: string;
    };

/**
 * Trains to the end, to a graceful stop or to a divergence, then writes the
 * model (to `out`, or elsewhere when that fails: see saveModelOrElsewhere).
 * A second stop signal ends the process at once (exit code 130).
 * @throws what the executor or the trainer throws, but for a divergence
 */
export async function runSession(args: SessionArgs): Promise<SessionOutcome> {
  const { config, data, executor, log, observer, stop, checkpointDir } = args;
  // Before the first await: a caller handing its own hold over (runCoordinator)
  // lets go right after this call returns.
  const unlisten = stop.listenToProcess();
  const timings = new StepTimings();
  const unsubscribe = stop.subscribe((signal, repeat) => {
    if (repeat) {
      log.warn({ signal }, "second signal: exiting now");
      process.exit(130);
    }
    executor.abort?.();
    log.warn({ signal }, "stopping after the current step");
  });
  // Copied now: the trainer advances the state object in place.
  const resumedFrom = args.state ? { epoch: args.state.epoch, step: args.state.step } : null;
  let lastCheckpoint: string | undefined;
  try {
    const result = await runTraining(config, data, executor, {
      state: args.state,
      checkpointEvery: checkpointDir ? args.checkpointEvery : 0,
      hooks: {
        onStep: (info) => {
          timings.add(info.timing);
          observer?.onStep?.(info);
        },
        onEpoch: (info) => {
          observer?.onEpoch?.(info);
          log.debug(
            { epoch: info.epoch + 1, accuracy: info.test.accuracy, cost: info.test.cost },
            "epoch done",
          );
        },
        shouldStop: () => stop.requested,
        checkpoint: checkpointDir
          ? async (state, reason) => {
              const t0 = performance.now();
              const { path, bytes } = await saveCheckpoint(
                checkpointDir,
                config,
                data.fingerprint,
                state,
                reason,
              );
              observer?.onCheckpoint?.((performance.now() - t0) / 1000, bytes);
              lastCheckpoint = path;
              log.debug({ path, reason, epoch: state.epoch, step: state.step }, "checkpoint written");
            }
          : undefined,
      },
    });
    const sha = weightsSha256(result.state.params);
    // Checked before training; should the write still fail, the weights go elsewhere.
    const saved = args.out
      ? await saveModelOrElsewhere(
          args.out,
          {
            spec: config.spec,
            params: result.state.params,
            info: {
              testAccuracy: result.test.accuracy,
              testCost: result.test.cost,
              config,
              weightsSha256: sha,
            },
          },
          checkpointDir,
        )
      : undefined;
    return { kind: "trained", result, weightsSha256: sha, saved, resumedFrom, stepMs: timings.summary() };
  } catch (e) {
    if (e instanceof DivergenceError) return { kind: "diverged", error: e, lastCheckpoint };
    throw e;
  } finally {
    unsubscribe();
    unlisten();
  }
}
