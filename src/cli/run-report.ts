/**
 * The CLI's side of a training session: the progress line while it trains,
 * then what it prints at the end (the `done:` line or the `--json` summary,
 * where a stopped run can be resumed from, a divergence) and the exit code
 * that makes: 0 done, 130 stopped, 1 when the model had to be saved
 * elsewhere, 3 diverged.
 */
import type { DataBundle } from "../core/dataset.js";
import { fastImplementation } from "../core/kernel.js";
import type { RunConfig } from "../core/run-config.js";
import type { RunObserver } from "../run/observer.js";
import type { SessionOutcome } from "../run/session.js";
import type { StopSignal } from "../run/stop-signal.js";
import { Progress } from "./progress.js";

/** What the run printed as its `--json` summary. */
export type Summary = Record<string, unknown>;

/** What a training command reports. */
export interface ReportArgs {
  options: { json: boolean; out?: string; checkpointDir?: string };
  config: RunConfig;
  data: DataBundle;
  stop: StopSignal;
  /** The command to suggest for resuming. */
  resumeHint: string;
  /**
   * Runs the session with the progress line as its first observer; returns
   * how it ended and the summary fields of the cluster (counters), if any.
   */
  train(progress: RunObserver): Promise<{ outcome: SessionOutcome; extraSummary?: Summary }>;
}

/**
 * Trains (see {@link ReportArgs.train}) and reports.
 * @returns the process exit code
 */
export async function trainAndReport(args: ReportArgs): Promise<number> {
  const { options: o, config, data } = args;
  const progress = new Progress(config.epochs);
  // Before the session's own listener: the bar is cleared before it logs the stop.
  const unsubscribe = args.stop.subscribe(() => progress.clear());
  let ended: { outcome: SessionOutcome; extraSummary?: Summary };
  try {
    ended = await args.train({
      onStep: (info) => progress.step(info),
      onEpoch: (info) => progress.epoch(info),
    });
  } finally {
    unsubscribe();
    progress.clear();
  }
  const { outcome } = ended;
  if (outcome.kind === "diverged") {
    const where = outcome.lastCheckpoint ? `; the last good weights are in ${outcome.lastCheckpoint}` : "";
    process.stderr.write(`gradfleet: ${outcome.error.message}${where}\n`);
    return 3;
  }
  const { result, saved, weightsSha256: sha } = outcome;
  if (saved?.fallback) {
    process.stderr.write(
      `gradfleet: cannot write the model to ${o.out} (${saved.why}); the weights are saved in ${saved.path} instead\n`,
    );
  }
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
    stepMs: outcome.stepMs,
    weightsSha256: sha,
    stopped: result.stopped,
    resumedFrom: outcome.resumedFrom,
    config,
    // How this process computes `fast` (native or wasm, the same bits); each
    // worker logs its own when it joins a session.
    kernelImplementation: config.kernel === "fast" ? fastImplementation() : "ref",
    dataFingerprint: data.fingerprint,
    ...ended.extraSummary,
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
  return saved?.fallback ? 1 : result.stopped ? 130 : 0;
}
