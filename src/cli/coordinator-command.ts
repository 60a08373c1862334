/**
 * `gradfleet coordinator` (`npm run coordinator`): the training run of
 * `train`, with the shards computed by separately started workers.
 */

import { hostname } from "node:os";
import { runCoordinator } from "../coordinator/coordinator.js";
import type { CoordinatorOptions } from "../shared/command-options.js";
import { sessionArgs, withRunPieces } from "./run-pieces.js";
import { trainAndReport } from "./run-report.js";
import { applyKernelChoice } from "./train-command.js";

/** Runs `coordinator`; returns the exit code. */
export async function runCoordinatorCommand(o: CoordinatorOptions): Promise<number> {
  applyKernelChoice(o);
  const how = { role: "coordinator", runId: o.runId, cluster: true, traceName: "coordinator" } as const;
  return withRunPieces(o, how, (run) =>
    trainAndReport({
      options: o,
      config: run.config,
      data: run.data,
      stop: run.stop,
      resumeHint: `gradfleet coordinator --run-id ${o.runId} (same flags)`,
      train: async (progress) => {
        const { outcome, cluster } = await runCoordinator({
          options: { ...o, advertiseHost: o.advertiseHost ?? hostname() },
          session: sessionArgs(o, run, progress),
          stats: run.stats,
          trace: run.trace,
          onStarted: (executor, redis) => run.metrics?.attach(executor, redis),
        });
        return { outcome, extraSummary: cluster };
      },
    }),
  );
}
