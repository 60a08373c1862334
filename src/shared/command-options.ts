/**
 * The options each command hands to the code that runs it: the camelCase
 * keys of the option table's names (src/cli/option-table.ts), typed. Here,
 * below the CLI, so that the coordinator, the worker and the run setup can
 * take them without importing the command line.
 */
import type { OptimizerName } from "../core/optimizer.js";
import type { KernelChoice } from "../core/run-config.js";
import type { CostName, HiddenActivation, OutputActivation } from "../core/spec.js";
import type { Dispatch } from "./dispatch.js";

/** The choices of `--log-level`. */
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/** A `--log-level`. */
export type LogLevel = (typeof LOG_LEVELS)[number];

/** How logs are written: `auto` is readable lines on a terminal, JSON lines anywhere else. */
export const LOG_FORMATS = ["auto", "text", "json"] as const;

/** A `--log-format`. */
export type LogFormat = (typeof LOG_FORMATS)[number];

/** The network's shape (train, coordinator). */
export interface ModelOptions {
  layers: number[];
  activation: HiddenActivation;
  output: OutputActivation;
  cost: CostName;
}

/** What a training run does (train, coordinator). */
export interface RunOptions extends ModelOptions {
  optimizer: OptimizerName;
  lr: number;
  momentum: number;
  weightDecay: number;
  epochs: number;
  batch: number;
  shards: number;
  seed: number;
  kernel: KernelChoice;
  data?: string;
  trainLimit?: number;
  testLimit?: number;
  out?: string;
  checkpointDir?: string;
  checkpointEvery: number;
  resume: boolean;
  json: boolean;
  logLevel: LogLevel;
  logFormat: LogFormat;
  /** Port of the live page (0: off). */
  uiPort: number;
  uiHost: string;
  /** Chrome trace-event file written at the end (see shared/trace.ts). */
  trace?: string;
}

/** How a process reaches the cluster (train, coordinator, worker). */
export interface ClusterOptions {
  redisUrl: string;
  redisCa?: string;
  runId?: string;
  metricsPort: number;
  metricsHost: string;
  dryRun: boolean;
}

/** The options of `train`. */
export interface TrainOptions extends RunOptions, ClusterOptions {
  workers: number;
  stepTimeout: number;
  minWorkers: number;
  dispatch: Dispatch;
  dataPort: number;
  dataHost: string;
  advertiseHost: string;
  shmDir: string;
  targetsFile?: string;
}

/** The options of `coordinator`. */
export interface CoordinatorOptions extends RunOptions, ClusterOptions {
  runId: string;
  stepTimeout: number;
  minWorkers: number;
  dispatch: Dispatch;
  dataPort: number;
  dataHost: string;
  shmDir: string;
  /** Unset: this host's name (see cli/coordinator-command.ts). */
  advertiseHost?: string;
}

/** The options of `worker`. */
export interface WorkerOptions extends ClusterOptions {
  runId: string;
  trace?: string;
  data?: string;
  workerId: string;
  /** BullMQ lock duration of this worker's seat, in seconds. */
  lockSeconds: number;
  logLevel: LogLevel;
  logFormat: LogFormat;
}

/** The options of `evaluate`. */
export interface EvaluateOptions {
  model: string;
  data?: string;
  testLimit?: number;
  json: boolean;
}

/** The options of `predict`. */
export interface PredictOptions {
  model: string;
  /** Test-set indices to predict. */
  index?: number[];
  data?: string;
  json: boolean;
}

/** The options of `weights`. */
export interface WeightsOptions {
  model: string;
  out: string;
}

/** The options type of each command. */
export interface CommandOptions {
  train: TrainOptions;
  coordinator: CoordinatorOptions;
  worker: WorkerOptions;
  evaluate: EvaluateOptions;
  predict: PredictOptions;
  weights: WeightsOptions;
}
