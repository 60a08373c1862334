/**
 * Turning parsed options into a run: the run config, the dataset (checked
 * against the layer sizes), and the state to start from (fresh or resumed).
 * What does not fit is a {@link RunSetupError}, raised before anything trains.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { CHECKPOINT_FILE, loadCheckpoint } from "../core/checkpoint.js";
import { loadDataset } from "../core/data/index.js";
import type { DataBundle } from "../core/dataset.js";
import { kernelNumerics, type RunConfig, runConfigHash } from "../core/run-config.js";
import type { TrainState } from "../core/trainer.js";
import type { RunOptions } from "../shared/command-options.js";
import { checkOutputPaths } from "./output-paths.js";
import { RunSetupError } from "./setup-error.js";

/** The run config named by the options. */
export function runConfigFrom(o: RunOptions): RunConfig {
  return {
    spec: { layers: o.layers, hidden: o.activation, output: o.output, cost: o.cost },
    optimizer: { name: o.optimizer, lr: o.lr, momentum: o.momentum, weightDecay: o.weightDecay },
    epochs: o.epochs,
    batch: o.batch,
    shards: o.shards,
    seed: o.seed,
    kernel: kernelNumerics(o.kernel),
  };
}

/**
 * Checks the output paths (before anything is read: a run that cannot save
 * its work must not start), loads the dataset and checks that the first and
 * last layer sizes fit it.
 */
export async function loadRunData(o: {
  data?: string;
  trainLimit?: number;
  testLimit?: number;
  layers: number[];
  out?: string;
  checkpointDir?: string;
}): Promise<DataBundle> {
  await checkOutputPaths(o);
  const data = await loadDataset({ dir: o.data, trainLimit: o.trainLimit, testLimit: o.testLimit });
  const first = o.layers[0];
  const last = o.layers[o.layers.length - 1];
  if (first !== data.train.pixels) {
    throw new RunSetupError(
      `--layers: the first size is ${first}, but the images of ${data.source} have ${data.train.pixels} pixels (${data.train.rows}x${data.train.cols})`,
      { flag: "--layers" },
    );
  }
  if (last !== data.classes) {
    throw new RunSetupError(
      `--layers: the last size is ${last}, but ${data.source} has ${data.classes} classes`,
      {
        flag: "--layers",
      },
    );
  }
  return data;
}

/** The state to resume from, checked against the config and data; undefined when not resuming. */
export async function resumeState(
  o: { resume: boolean; checkpointDir?: string },
  cfg: RunConfig,
  data: DataBundle,
): Promise<TrainState | undefined> {
  if (!o.resume) return undefined;
  if (!o.checkpointDir) throw new RunSetupError("--resume: needs --checkpoint-dir", { flag: "--resume" });
  if (!existsSync(join(o.checkpointDir, CHECKPOINT_FILE))) {
    // So that a restartable deployment (a Kubernetes Job, compose) can always
    // pass --resume: the first start has nothing to resume yet.
    process.stderr.write(
      `gradfleet: --resume: no checkpoint in ${o.checkpointDir} yet; starting a new run\n`,
    );
    return undefined;
  }
  const ck = await loadCheckpoint(o.checkpointDir);
  if (ck.configHash !== runConfigHash(cfg)) {
    const diff = Object.keys(cfg).filter(
      (k) => JSON.stringify(cfg[k as keyof RunConfig]) !== JSON.stringify(ck.config[k as keyof RunConfig]),
    );
    throw new RunSetupError(
      `--resume: the checkpoint in ${o.checkpointDir} was made with a different config (${diff.join(", ")} differ); ` +
        "use the same flags as the interrupted run",
      { flag: "--resume" },
    );
  }
  if (ck.dataFingerprint !== data.fingerprint) {
    throw new RunSetupError(
      `--resume: the checkpoint in ${o.checkpointDir} was made on other data (fingerprint differs); use the same --data and limits`,
      { flag: "--resume" },
    );
  }
  return ck.state;
}
