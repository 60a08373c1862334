/**
 * Runs training with a given GradientExecutor and reports like every
 * training command does: progress, per-epoch lines, checkpoints, graceful
 * stop on SIGINT/SIGTERM, the model file and the `--json` summary.
 * `train --workers 0`, `train --workers N` and `coordinator` all end here.
 */
import { saveCheckpoint } from "../core/checkpoint.js";
import type { DataBundle } from "../core/dataset.js";
import { type RunConfig, weightsSha256 } from "../core/run-config.js";
import {
  DivergenceError,
  type EpochInfo,
  type GradientExecutor,
  runTraining,
  type StepInfo,
  type TrainResult,
  type TrainState,
} from "../core/trainer.js";
import type { Logger } from "../shared/log.js";
import { type Trace, traceNow } from "../shared/trace.js";
import type { RunOptions } from "./options.js";
import { saveModelOrElsewhere } from "./output-paths.js";
import { Progress } from "./progress.js";
import { StepTimings } from "./step-timings.js";

/** Observers of a run besides the terminal (metrics, the live page). */
export interface RunObserver {
  onStep?(info: StepInfo, batchSamples: number): void;
  onEpoch?(info: EpochInfo): void;
  onCheckpoint?(seconds: number, bytes: number): void;
}

/** What the run printed as its `--json` summary. */
export type Summary = Record<string, unknown>;

/**
 * Trains to the end (or to a graceful stop) and prints the report.
 * @returns the process exit code and the summary.
 */
export async function trainAndReport(args: {
  options: RunOptions;
  config: RunConfig;
  data: DataBundle;
  executor: GradientExecutor;
  state?: TrainState;
  log: Logger;
  observer?: RunObserver;
  /** Extra summary fields computed at the end (cluster counters). */
  extraSummary?: () => Record<string, unknown>;
  /** The command to suggest for resuming. */
  resumeHint: string;
  /** A stop signal that came before this was called (while the run was being published). */
  stoppedEarly?: string;
}): Promise<{ exitCode: number; summary?: Summary; result?: TrainResult }> {
  const { options: o, config, data, executor, log, observer } = args;
  const progress = new Progress(config.epochs);
  const timings = new StepTimings();
  let stopRequested = false;
  const onSignal = (sig: string) => {
    if (stopRequested) {
      log.warn({ signal: sig }, "second signal: exiting now");
      process.exit(130);
    }
    stopRequested = true;
    executor.abort?.();
    progress.clear();
    log.warn({ signal: sig }, "stopping after the current step");
  };
  const sigint = () => onSignal("SIGINT");
  const sigterm = () => onSignal("SIGTERM");
  process.on("SIGINT", sigint);
  process.on("SIGTERM", sigterm);
  if (args.stoppedEarly) onSignal(args.stoppedEarly);
  // Copied now: the trainer advances the state object in place.
  const resumedFrom = args.state ? { epoch: args.state.epoch, step: args.state.step } : null;
  let lastCheckpoint: string | undefined;
  try {
    const result = await runTraining(config, data, executor, {
      state: args.state,
      checkpointEvery: o.checkpointDir ? o.checkpointEvery : 0,
      hooks: {
        onStep: (info) => {
          const batch = Math.min(config.batch, data.train.n - info.step * config.batch);
          progress.step(info, batch);
          timings.add(info.timing);
          observer?.onStep?.(info, batch);
        },
        onEpoch: (info) => {
          progress.epoch(info);
          observer?.onEpoch?.(info);
          log.debug(
            { epoch: info.epoch + 1, accuracy: info.test.accuracy, cost: info.test.cost },
            "epoch done",
          );
        },
        shouldStop: () => stopRequested,
        checkpoint: o.checkpointDir
          ? async (state, reason) => {
              const t0 = performance.now();
              const { path, bytes } = await saveCheckpoint(
                o.checkpointDir!,
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
    progress.clear();
    const sha = weightsSha256(result.state.params);
    // Checked before training; should the write still fail, the weights go elsewhere (and the exit code says so).
    const saved = o.out
      ? await saveModelOrElsewhere(
          o.out,
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
          o.checkpointDir,
        )
      : undefined;
    if (result.stopped) {
      const where = `epoch ${result.state.epoch + 1} step ${result.state.step}`;
      process.stderr.write(
        o.checkpointDir
          ? `gradfleet: stopped at ${where}; resume with: ${args.resumeHint} --resume --checkpoint-dir ${o.checkpointDir}\n`
          : `gradfleet: stopped at ${where}; this run had no --checkpoint-dir, so it cannot be resumed\n`,
      );
    }
    const summary: Summary = {
      testAccuracy: result.test.accuracy,
      testCost: result.test.cost,
      epochs: result.state.epoch,
      steps: result.state.updates,
      samples: result.state.samples,
      samplesPerSecond: result.trainSeconds > 0 ? result.samples / result.trainSeconds : 0,
      trainSeconds: result.trainSeconds,
      stepMs: timings.summary(),
      weightsSha256: sha,
      stopped: result.stopped,
      resumedFrom,
      config,
      dataFingerprint: data.fingerprint,
      ...args.extraSummary?.(),
      ...(saved?.fallback ? { modelSavedTo: saved.path } : {}),
    };
    if (o.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    else {
      process.stdout.write(
        `done: test accuracy ${(result.test.accuracy * 100).toFixed(2)}%, ${result.state.samples} samples in ` +
          `${result.state.updates} steps, ${Math.round(Number(summary.samplesPerSecond))} samples/s, weights sha256 ${sha}\n`,
      );
      if (saved) process.stdout.write(`model written to ${saved.path}\n`);
    }
    const exitCode = saved?.fallback ? 1 : result.stopped ? 130 : 0;
    return { exitCode, summary, result };
  } catch (e) {
    progress.clear();
    if (e instanceof DivergenceError) {
      process.stderr.write(
        `gradfleet: ${e.message}${lastCheckpoint ? `; the last good weights are in ${lastCheckpoint}` : ""}\n`,
      );
      return { exitCode: 3 };
    }
    throw e;
  } finally {
    process.off("SIGINT", sigint);
    process.off("SIGTERM", sigterm);
  }
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

/** One observer that forwards to several (metrics, the live page, ...); undefined entries are skipped. */
export function combineObservers(...list: (RunObserver | undefined)[]): RunObserver {
  const obs = list.filter((o): o is RunObserver => o !== undefined);
  return {
    onStep: (info, batch) => {
      for (const o of obs) o.onStep?.(info, batch);
    },
    onEpoch: (info) => {
      for (const o of obs) o.onEpoch?.(info);
    },
    onCheckpoint: (seconds, bytes) => {
      for (const o of obs) o.onCheckpoint?.(seconds, bytes);
    },
  };
}
