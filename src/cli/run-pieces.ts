/**
 * The pieces every training command builds before it trains, in one order
 * for `train` and `coordinator`:
 *
 * 1. the logger;
 * 2. the metrics endpoint (first, so that /healthz answers and /readyz says
 *    503 while the data loads and Redis connects);
 * 3. the cluster's counters and the trace;
 * 4. the run config, then the live page (which shows it while the data loads);
 * 5. the data (output paths checked first), then the state to resume from;
 * 6. the observers (metrics, live page, trace) and the stop signal.
 *
 * The command then trains with them (run-report.ts, src/run/session.ts) and
 * everything is closed in reverse order, however the run ends.
 */
import { ClusterStats } from "../coordinator/cluster-stats.js";
import { type CoordinatorMetrics, serveCoordinatorMetrics } from "../coordinator/metrics.js";
import type { DataBundle } from "../core/dataset.js";
import type { RunConfig } from "../core/run-config.js";
import type { TrainState } from "../core/trainer.js";
import { combineObservers, type RunObserver, traceObserver } from "../run/observer.js";
import type { SessionArgs } from "../run/session.js";
import { loadRunData, resumeState, runConfigFrom } from "../run/setup.js";
import { StopSignal } from "../run/stop-signal.js";
import type { RunOptions } from "../shared/command-options.js";
import { createLogger, type Logger } from "../shared/log.js";
import { Trace } from "../shared/trace.js";
import { type LivePage, serveLivePage } from "../ui/server.js";

/** What a training command trains with. */
export interface RunPieces {
  log: Logger;
  config: RunConfig;
  data: DataBundle;
  /** The state to resume from; undefined for a fresh run. */
  state?: TrainState;
  /** The cluster's counters (shown by the live page of a cluster run). */
  stats: ClusterStats;
  trace?: Trace;
  metrics?: CoordinatorMetrics;
  /** Metrics, live page and trace, in one. */
  observer: RunObserver;
  stop: StopSignal;
}

/** How the command runs. */
export interface RunPiecesOf {
  role: "train" | "coordinator";
  runId: string;
  /** Whether the gradients come from workers (cluster metrics, the page's worker count). */
  cluster: boolean;
  /** This process's track in the trace. */
  traceName: string;
  /** Other processes' trace files merged into `--trace` at the end. */
  traceParts?: string[];
}

/**
 * Builds the pieces (see the module comment), runs `body` with them, and
 * closes them.
 * @throws RunSetupError when the run cannot start as asked (the CLI says so and exits 2)
 */
export async function withRunPieces<T>(
  o: RunOptions & { metricsPort: number; metricsHost: string },
  how: RunPiecesOf,
  body: (run: RunPieces) => Promise<T>,
): Promise<T> {
  const log = createLogger({
    level: o.logLevel,
    format: o.logFormat,
    role: how.role,
    bindings: { run: how.runId },
  });
  const metrics = await serveCoordinatorMetrics(o, log, { cluster: how.cluster });
  const stats = new ClusterStats();
  const trace = o.trace ? new Trace(o.trace, how.traceName) : undefined;
  let live: LivePage | undefined;
  try {
    const config = runConfigFrom(o);
    live = await serveLivePage(o, config, how.cluster ? stats : "in-process", log);
    const data = await loadRunData(o);
    const state = await resumeState(o, config, data);
    const observer = combineObservers(metrics?.observer, live?.observer, trace && traceObserver(trace));
    return await body({ log, config, data, state, stats, trace, metrics, observer, stop: new StopSignal() });
  } finally {
    await trace?.close(how.traceParts);
    await live?.close();
    await metrics?.close();
  }
}

/**
 * The session's arguments that come from the options and the pieces, with
 * `first` (the progress line) as the first observer; the caller adds the
 * executor.
 */
export function sessionArgs(
  o: RunOptions,
  run: RunPieces,
  first: RunObserver,
): Omit<SessionArgs, "executor"> {
  return {
    config: run.config,
    data: run.data,
    state: run.state,
    checkpointDir: o.checkpointDir,
    checkpointEvery: o.checkpointEvery,
    out: o.out,
    log: run.log,
    observer: combineObservers(first, run.observer),
    stop: run.stop,
  };
}
