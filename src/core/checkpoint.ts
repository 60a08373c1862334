/**
 * Checkpoints: weights, optimizer state and the data position (seed via the
 * config, epoch, step), written atomically (temp file + fsync + rename) as
 * safetensors with tensors `params` and `optimizer`, so resuming gives the
 * same bits as a run that was never interrupted.
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { InputFileError, readRegularFile } from "./data/regular-file.js";
import { momentCount } from "./optimizer.js";
import { type RunConfig, runConfigHash } from "./run-config.js";
import {
  decodeSafeTensors,
  encodeSafeTensors,
  MAX_SAFETENSORS_HEADER,
  SafeTensorsError,
} from "./safetensors.js";
import { layoutOf, MAX_PARAMETERS } from "./spec.js";
import type { TrainState } from "./trainer.js";
import { writeFileAtomic } from "./write-atomic.js";

export const CHECKPOINT_FORMAT = "gradfleet-checkpoint/1";
/** The file name of the latest checkpoint inside a checkpoint directory. */
export const CHECKPOINT_FILE = "checkpoint.safetensors";

/** A checkpoint as read back. */
export interface Checkpoint {
  config: RunConfig;
  configHash: string;
  dataFingerprint: string;
  state: TrainState;
  reason: string;
}

/** Writes the checkpoint of `state` into `dir` (created if needed); returns its path and size. */
export async function saveCheckpoint(
  dir: string,
  config: RunConfig,
  dataFingerprint: string,
  state: TrainState,
  reason: string,
): Promise<{ path: string; bytes: number }> {
  await mkdir(dir, { recursive: true });
  const bytes = encodeSafeTensors(
    [
      ["params", { shape: [state.params.length], data: state.params }],
      ["optimizer", { shape: [state.opt.length], data: state.opt }],
    ],
    {
      format: CHECKPOINT_FORMAT,
      config: JSON.stringify(config),
      configHash: runConfigHash(config),
      dataFingerprint,
      epoch: String(state.epoch),
      step: String(state.step),
      updates: String(state.updates),
      samples: String(state.samples),
      reason,
    },
  );
  const path = join(dir, CHECKPOINT_FILE);
  await writeFileAtomic(path, bytes);
  return { path, bytes: bytes.length };
}

/** Reads and validates the checkpoint in `dir`. */
export async function loadCheckpoint(dir: string): Promise<Checkpoint> {
  const path = join(dir, CHECKPOINT_FILE);
  let buf: Buffer;
  try {
    // Weights and at most two optimizer moments (Adam) of the largest network.
    buf = await readRegularFile(path, "the checkpoint", 8 + MAX_SAFETENSORS_HEADER + 3 * 4 * MAX_PARAMETERS);
  } catch (e) {
    throw e instanceof InputFileError ? new SafeTensorsError(e.message) : e;
  }
  const st = decodeSafeTensors(buf, path);
  const md = st.metadata;
  const fail = (why: string): never => {
    throw new SafeTensorsError(`${path}: not a valid checkpoint: ${why}`);
  };
  if (md.format !== CHECKPOINT_FORMAT)
    fail(`format is ${JSON.stringify(md.format)}, expected ${CHECKPOINT_FORMAT}`);
  let config: RunConfig;
  try {
    config = JSON.parse(md.config) as RunConfig;
  } catch {
    return fail("config is not JSON");
  }
  if (runConfigHash(config) !== md.configHash) fail("config does not match its hash");
  const size = layoutOf(config.spec.layers).size;
  const params = st.tensors.get("params")?.data;
  const opt = st.tensors.get("optimizer")?.data;
  if (!params || params.length !== size) fail(`params must hold ${size} values`);
  if (!opt || opt.length !== momentCount(config.optimizer.name) * size)
    fail("optimizer state has the wrong size");
  const num = (k: string): number => {
    const v = Number(md[k]);
    if (!Number.isInteger(v) || v < 0) fail(`${k} is not a whole number`);
    return v;
  };
  return {
    config,
    configHash: md.configHash,
    dataFingerprint: md.dataFingerprint ?? "",
    reason: md.reason ?? "",
    state: {
      params: params!,
      opt: opt!,
      epoch: num("epoch"),
      step: num("step"),
      updates: num("updates"),
      samples: num("samples"),
    },
  };
}
