/**
 * `gradfleet coordinator` (`npm run coordinator`): the training run of
 * `train`, with the shards computed by separately started workers.
 */

import { hostname } from "node:os";
import type { CoordinatorOptions } from "../cli/options.js";
import { loadRunData, resumeState, runConfigFrom } from "../cli/run-setup.js";
import { combineObservers, traceObserver } from "../cli/train-run.js";
import { createLogger } from "../shared/log.js";
import { Trace } from "../shared/trace.js";
import { type LivePage, serveLivePage } from "../ui/server.js";
import { ClusterStats } from "./cluster-stats.js";
import { runCoordinator } from "./coordinator.js";
import { serveCoordinatorMetrics } from "./metrics.js";

/** Runs `coordinator`; returns the exit code. */
export async function runCoordinatorCommand(o: CoordinatorOptions): Promise<number> {
  const log = createLogger({
    level: o.logLevel,
    format: o.logFormat,
    role: "coordinator",
    bindings: { run: o.runId },
  });
  // Metrics first: /healthz answers and /readyz says 503 while the data loads and Redis connects.
  const metrics = await serveCoordinatorMetrics(o, log, { cluster: true });
  const stats = new ClusterStats();
  const trace = o.trace ? new Trace(o.trace, "coordinator") : undefined;
  let live: LivePage | undefined;
  try {
    const config = runConfigFrom(o);
    live = await serveLivePage(o, config, stats, log);
    const data = await loadRunData(o);
    const state = await resumeState(o, config, data);
    return await runCoordinator({
      options: { ...o, advertiseHost: o.advertiseHost ?? hostname() },
      config,
      data,
      state,
      log,
      observer: combineObservers(metrics?.observer, live?.observer, trace && traceObserver(trace)),
      stats,
      trace,
      onStarted: (executor, redis) => metrics?.attach(executor, redis),
      resumeHint: `gradfleet coordinator --run-id ${o.runId} (same flags)`,
    });
  } finally {
    await trace?.close();
    await live?.close();
    await metrics?.close();
  }
}
