/**
 * `gradfleet coordinator` (`npm run coordinator`): the training run of
 * `train`, with the shards computed by separately started workers.
 */
import { loadRunData, resumeState, runConfigFrom } from "../cli/run-setup.js";
import type { CoordinatorOptions } from "../cli/options.js";
import { createLogger } from "../shared/log.js";
import { runCoordinator } from "./coordinator.js";

/** Runs `coordinator`; returns the exit code. */
export async function runCoordinatorCommand(o: CoordinatorOptions): Promise<number> {
  const log = createLogger({ level: o.logLevel, role: "coordinator", bindings: { run: o.runId } });
  const config = runConfigFrom(o);
  const data = await loadRunData(o);
  const state = await resumeState(o, config, data);
  return runCoordinator({
    options: o,
    config,
    data,
    state,
    log,
    resumeHint: `gradfleet coordinator --run-id ${o.runId} (same flags)`,
  });
}
