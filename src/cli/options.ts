/**
 * The command-line options of `gradfleet`: ONE declarative table that the
 * parser, the help text, the README table and the deploy-manifest tests all
 * read, so a flag, its environment variable, its default and what it accepts
 * cannot drift apart.
 *
 * Precedence: a flag beats its environment variable, which beats the default.
 * Every flag `--some-flag` has the twin `GRADFLEET_SOME_FLAG` (the exception,
 * `--redis-url`, reads the conventional `REDIS_URL`).
 *
 * To add an option, add one entry to {@link OPTIONS} (and its key to the
 * command's options interface below); parsing, help, `envVarsOf` and the
 * Markdown table pick it up.
 */
import { hostname } from "node:os";
import { OPTIMIZERS, type OptimizerName } from "../core/optimizer.js";
import { KERNELS, type KernelName } from "../core/run-config.js";
import type { CostName, HiddenActivation, OutputActivation } from "../core/spec.js";
import { COSTS, checkParameterCount, HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS } from "../core/spec.js";
import { RUN_ID_PATTERN } from "../shared/keys.js";

export { KERNELS, type KernelName, OPTIMIZERS, type OptimizerName };

// ---------------------------------------------------------------------------
// Errors

/**
 * A mistake in the command line or the environment. The message is one line
 * that names the flag (and the environment variable when the value came from
 * there), the bad value and what is accepted; the CLI prints it as
 * `gradfleet: <message>` and exits with {@link UsageError.exitCode}.
 */
export class UsageError extends Error {
  /** The conventional exit code of a usage error. */
  readonly exitCode = 2;
  /** The flag at fault, e.g. `--epochs`, when there is one. */
  readonly flag?: string;
  /** The environment variable the bad value came from, when it did. */
  readonly envVar?: string;

  constructor(message: string, where: { flag?: string; envVar?: string } = {}) {
    super(message);
    this.name = "UsageError";
    this.flag = where.flag;
    this.envVar = where.envVar;
  }
}

// ---------------------------------------------------------------------------
// Commands

/** A command's positional arguments (e.g. `predict IMAGE...`). */
export interface PositionalSpec {
  /** Shown in the usage line, e.g. `IMAGE`. */
  name: string;
  min: number;
  /** Unlimited when absent. */
  max?: number;
  description: string;
}

/** One subcommand of the CLI. */
export interface CommandDef {
  name: string;
  summary: string;
  positionals?: PositionalSpec;
}

/** The subcommands, in the order the help lists them. */
export const COMMANDS = [
  { name: "train", summary: "Train a model: in this process, or as a local cluster with --workers N" },
  { name: "coordinator", summary: "Coordinate a cluster training run (serves /metrics and /healthz)" },
  { name: "worker", summary: "Compute gradients for cluster runs; scale by running more of them" },
  { name: "evaluate", summary: "Measure a saved model's cost and accuracy on the test set" },
  {
    name: "predict",
    summary: "Predict the digits of PNG images or test examples with a saved model",
    positionals: {
      name: "IMAGE",
      min: 0,
      description: "PNG files of digits (any size; scaled and centred as MNIST)",
    },
  },
  { name: "weights", summary: "Draw a saved model's first-layer weights as a PNG grid of tiles" },
] as const satisfies readonly CommandDef[];

export type CommandName = (typeof COMMANDS)[number]["name"];

/** Names of all commands, in help order. */
export const COMMAND_NAMES: readonly CommandName[] = COMMANDS.map((c) => c.name);

/** Whether `name` is a command of the CLI. */
export function isCommand(name: string): name is CommandName {
  return (COMMAND_NAMES as readonly string[]).includes(name);
}

/** The definition of a command; throws a UsageError for an unknown one. */
export function commandDef(name: string): CommandDef {
  const def = (COMMANDS as readonly CommandDef[]).find((c) => c.name === name);
  if (!def) throw unknownCommand(name);
  return def;
}

// ---------------------------------------------------------------------------
// Option definitions

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

export type LogLevel = (typeof LOG_LEVELS)[number];

/** How logs are written: `auto` is readable lines on a terminal, JSON lines anywhere else. */
export const LOG_FORMATS = ["auto", "text", "json"] as const;

export type LogFormat = (typeof LOG_FORMATS)[number];

/** A parsed option value. */
export type OptionValue = number | string | boolean | number[];

/** Where an option's value came from. */
export type OptionSource = "flag" | "env" | "default";

/** Sections of the help text, in order. */
export const OPTION_GROUPS = ["Model", "Training", "Data", "Checkpoints", "Cluster", "Output"] as const;
export type OptionGroup = (typeof OPTION_GROUPS)[number];

interface OptionBase {
  /** The flag without its dashes, kebab-case: `train-limit`. */
  name: string;
  /** The commands that accept the option. */
  commands: readonly CommandName[];
  group: OptionGroup;
  /** One line for the help. */
  description: string;
  /** The environment twin, when it is not `GRADFLEET_<NAME_IN_UPPER_SNAKE>`. */
  env?: string;
  /** Placeholder of the value in the help (`N`, `PATH`...); derived from the kind when absent. */
  metavar?: string;
  /** The default for every command; a function is called at parse time (e.g. hostname-pid). */
  default?: OptionValue | (() => OptionValue);
  /** Per-command defaults; they win over `default`. */
  defaults?: Partial<Record<CommandName, OptionValue>>;
  /**
   * How the help shows a default that has no value (`bundled MNIST`) or is
   * computed (`<hostname>-<pid>`); per command when it differs between them.
   */
  defaultText?: string | Partial<Record<CommandName, string>>;
  /** `true`, or the commands for which the option must be given. */
  required?: boolean | readonly CommandName[];
  /** Options that must also be set when this one is set (to true for a boolean). */
  requires?: readonly string[];
  /** Extra validation of a parsed value: returns what is wrong, or undefined. */
  check?: (value: never) => string | undefined;
  /** How to show a value without its secrets (e.g. a password inside a URL). */
  redact?: (value: never) => string;
}

export interface IntOption extends OptionBase {
  kind: "int";
  min?: number;
  max?: number;
}
export interface FloatOption extends OptionBase {
  kind: "float";
  min?: number;
  max?: number;
  /** `min` itself is refused (e.g. a learning rate of 0). */
  minExclusive?: boolean;
  /** `max` itself is refused (e.g. a momentum of 1). */
  maxExclusive?: boolean;
}
export interface StringOption extends OptionBase {
  kind: "string";
  pattern?: RegExp;
  /** What the pattern accepts, in words, for errors and help. */
  patternText?: string;
}
export interface PathOption extends OptionBase {
  kind: "path";
}
export interface EnumOption extends OptionBase {
  kind: "enum";
  values: readonly string[];
  /** Values that were accepted once: each refused with its own line (why, and what to do instead). */
  removed?: Readonly<Record<string, string>>;
}
export interface IntListOption extends OptionBase {
  kind: "intlist";
  /** Fewest entries (default 1). */
  minItems?: number;
  /** Smallest entry (default 1). */
  min?: number;
  max?: number;
}
export interface BooleanOption extends OptionBase {
  kind: "boolean";
}

/** One option of the table. */
export type OptionDef =
  | IntOption
  | FloatOption
  | StringOption
  | PathOption
  | EnumOption
  | IntListOption
  | BooleanOption;

const MODEL: readonly CommandName[] = ["train", "coordinator"];
const RUNNERS: readonly CommandName[] = ["train", "coordinator"];
const CLUSTER: readonly CommandName[] = ["train", "coordinator", "worker"];
const LOGGERS: readonly CommandName[] = ["train", "coordinator", "worker"];

const UINT32_MAX = 2 ** 32 - 1;

/** `--dispatch`'s one value: steps over the coordinator's data port (see coordinator/direct-executor.ts). */
export const DISPATCHES = ["direct"] as const;
/** A dispatch mode. */
export type Dispatch = (typeof DISPATCHES)[number];
/** Why `--dispatch lanes` and `--dispatch jobs` are refused. */
const REMOVED_DISPATCH =
  "was removed (the Redis-only dispatches are gone; direct, the default, is the only one): drop --dispatch or pass --dispatch direct";
/** Largest `--batch`. */
export const MAX_BATCH = 1_000_000;

/**
 * THE option table. Defaults shared by `train` and `coordinator` are the same
 * on purpose: the same flags then give the same run spec, hence the same bits.
 */
export const OPTIONS: readonly OptionDef[] = [
  // Model
  {
    name: "layers",
    kind: "intlist",
    commands: MODEL,
    group: "Model",
    description: "Layer sizes, input first",
    metavar: "N,N,...",
    minItems: 2,
    min: 1,
    max: 1_000_000,
    default: [784, 16, 16, 10],
    check: (v: number[]) => checkParameterCount(v),
  },
  {
    name: "activation",
    kind: "enum",
    commands: MODEL,
    group: "Model",
    description: "Activation of the hidden layers",
    values: HIDDEN_ACTIVATIONS,
    default: "sigmoid",
  },
  {
    name: "output",
    kind: "enum",
    commands: MODEL,
    group: "Model",
    description: "Activation of the output layer (softmax goes with --cost cross-entropy)",
    values: OUTPUT_ACTIVATIONS,
    default: "sigmoid",
  },
  {
    name: "cost",
    kind: "enum",
    commands: MODEL,
    group: "Model",
    description: "Per-example cost",
    values: COSTS,
    default: "quadratic",
  },
  // Training
  {
    name: "optimizer",
    kind: "enum",
    commands: RUNNERS,
    group: "Training",
    description: "Update rule",
    values: OPTIMIZERS,
    default: "sgd",
  },
  {
    name: "lr",
    kind: "float",
    commands: RUNNERS,
    group: "Training",
    description: "Learning rate (1.5 here is Nielsen's 3.0: the cost has no 1/2)",
    min: 0,
    minExclusive: true,
    default: 1.5,
  },
  {
    name: "momentum",
    kind: "float",
    commands: RUNNERS,
    group: "Training",
    description: "Momentum coefficient of --optimizer momentum",
    min: 0,
    max: 1,
    maxExclusive: true,
    default: 0.9,
  },
  {
    name: "weight-decay",
    kind: "float",
    commands: RUNNERS,
    group: "Training",
    description: "L2 weight decay",
    min: 0,
    default: 0,
  },
  {
    name: "epochs",
    kind: "int",
    commands: RUNNERS,
    group: "Training",
    description: "Passes over the training set",
    min: 1,
    default: 30,
  },
  {
    name: "batch",
    kind: "int",
    commands: RUNNERS,
    group: "Training",
    description: "Global mini-batch size (all shards together)",
    min: 1,
    // 16 times MNIST's training set: a larger batch is a typo, not a plan.
    max: MAX_BATCH,
    default: 10,
  },
  {
    name: "shards",
    kind: "int",
    commands: RUNNERS,
    group: "Training",
    description: "Shards per mini-batch; fixed whatever the number of workers, so the bits are too",
    min: 1,
    max: 4096,
    default: 4,
  },
  {
    name: "seed",
    kind: "int",
    commands: RUNNERS,
    group: "Training",
    description: "Seed of the initial weights and of the epoch permutations",
    min: 0,
    max: UINT32_MAX,
    default: 1,
  },
  {
    name: "kernel",
    kind: "enum",
    commands: RUNNERS,
    group: "Training",
    description: "Compute kernel; part of the run spec, so every worker of a run uses the same",
    values: KERNELS,
    default: "fast",
  },
  {
    name: "workers",
    kind: "int",
    commands: ["train"],
    group: "Cluster",
    description: "0: train in this process; N: a local coordinator and N worker processes",
    min: 0,
    max: 64,
    default: 0,
  },
  // Data
  {
    name: "data",
    kind: "path",
    commands: ["train", "coordinator", "worker", "evaluate", "predict"],
    group: "Data",
    description: "Directory of an IDX dataset (MNIST file names)",
    metavar: "DIR",
    defaultText: "bundled MNIST",
  },
  {
    name: "train-limit",
    kind: "int",
    commands: RUNNERS,
    group: "Data",
    description: "Use only the first N training examples",
    min: 1,
    defaultText: "all",
  },
  {
    name: "test-limit",
    kind: "int",
    commands: ["train", "coordinator", "evaluate"],
    group: "Data",
    description: "Use only the first N test examples",
    min: 1,
    defaultText: "all",
  },
  {
    name: "model",
    kind: "path",
    commands: ["evaluate", "predict", "weights"],
    group: "Data",
    description: "Model file to read (written by train --out)",
    metavar: "FILE",
    required: ["evaluate", "predict", "weights"],
  },
  {
    name: "index",
    kind: "intlist",
    commands: ["predict"],
    group: "Data",
    description: "Test-set examples to predict, 0-based, comma-separated",
    metavar: "N,N,...",
    min: 0,
  },
  // Checkpoints
  {
    name: "out",
    kind: "path",
    commands: [...RUNNERS, "weights"],
    group: "Checkpoints",
    description: "Write the trained model to this file (weights: the PNG image to write)",
    metavar: "FILE",
    defaultText: { train: "not written", coordinator: "not written" },
    required: ["weights"],
  },
  {
    name: "checkpoint-dir",
    kind: "path",
    commands: RUNNERS,
    group: "Checkpoints",
    description: "Directory for checkpoints (weights, optimizer state, data position)",
    metavar: "DIR",
    defaultText: "no checkpoints",
  },
  {
    name: "checkpoint-every",
    kind: "int",
    commands: RUNNERS,
    group: "Checkpoints",
    description: "Also checkpoint every N steps (0: only at the end of each epoch)",
    min: 0,
    default: 0,
  },
  {
    name: "resume",
    kind: "boolean",
    commands: RUNNERS,
    group: "Checkpoints",
    description: "Resume from the latest checkpoint in --checkpoint-dir",
    default: false,
    requires: ["checkpoint-dir"],
  },
  // Cluster
  {
    name: "redis-url",
    kind: "string",
    commands: CLUSTER,
    group: "Cluster",
    description: "Redis server (TLS with rediss://)",
    env: "REDIS_URL",
    metavar: "URL",
    patternText: "a redis:// or rediss:// URL",
    default: "redis://127.0.0.1:6379",
    check: (v: string) => checkRedisUrl(v),
    redact: (v: string) => redactUrl(v),
  },
  {
    name: "redis-ca",
    kind: "path",
    commands: CLUSTER,
    group: "Cluster",
    description: "CA certificate (PEM) that signs the Redis server's TLS certificate",
    metavar: "FILE",
    defaultText: "system CAs",
  },
  {
    name: "run-id",
    kind: "string",
    commands: CLUSTER,
    group: "Cluster",
    description: "Run name; keys live under gf:{run-id}:",
    metavar: "ID",
    pattern: RUN_ID_PATTERN,
    patternText: "1 to 64 letters, digits, _ or -",
    defaults: { coordinator: "default", worker: "default" },
    defaultText: { train: "a fresh id per run" },
  },
  {
    name: "step-timeout",
    kind: "float",
    commands: RUNNERS,
    group: "Cluster",
    description: "Seconds the coordinator waits for a step's shards before it re-enqueues them",
    metavar: "SECONDS",
    min: 0,
    minExclusive: true,
    default: 30,
  },
  {
    name: "dispatch",
    kind: "enum",
    commands: RUNNERS,
    group: "Cluster",
    description:
      "How steps reach workers. Only direct: workers take a BullMQ seat, then get each step's weights and shards over the coordinator's data port and answer there (no Redis command per step). Kept so existing scripts work; lanes and jobs were removed",
    values: DISPATCHES,
    removed: {
      lanes: REMOVED_DISPATCH,
      jobs: REMOVED_DISPATCH,
    },
    default: "direct",
  },
  {
    name: "data-port",
    kind: "int",
    commands: RUNNERS,
    group: "Cluster",
    description:
      "Port where seated workers get steps; 0: any free port (workers find it in the run spec); containers publish a fixed one",
    metavar: "PORT",
    min: 0,
    max: 65535,
    default: 0,
  },
  {
    name: "data-host",
    kind: "string",
    commands: RUNNERS,
    group: "Cluster",
    description: "Address the data port listens on",
    metavar: "HOST",
    pattern: /^\S{1,253}$/,
    patternText: "a host name or IP address",
    defaults: { coordinator: "0.0.0.0", train: "127.0.0.1" },
  },
  {
    name: "advertise-host",
    kind: "string",
    commands: RUNNERS,
    group: "Cluster",
    description:
      "Address workers dial to reach the data port (in the run spec): a name or IP this host has for them",
    metavar: "HOST",
    pattern: /^[A-Za-z0-9.:_-]{1,253}$/,
    patternText: "a host name or IP address",
    defaults: { train: "127.0.0.1" },
    defaultText: { coordinator: "this host's name", train: "127.0.0.1" },
  },
  {
    name: "lock-seconds",
    kind: "float",
    commands: ["worker"],
    group: "Cluster",
    description:
      "BullMQ lock time of a worker's seat: the seat of a worker that stops renewing its lock this long (killed, frozen) is handed to another worker",
    metavar: "SECONDS",
    min: 0,
    minExclusive: true,
    default: 30,
  },
  {
    name: "worker-id",
    kind: "string",
    commands: ["worker"],
    group: "Cluster",
    description: "Name of this worker in logs and metrics",
    metavar: "ID",
    // Printable ASCII: it travels in refusal notices and metric labels.
    pattern: /^[\x21-\x7e]{1,128}$/,
    patternText: "1 to 128 printable ASCII characters, no spaces",
    default: () => `${hostname()}-${process.pid}`,
    defaultText: "<hostname>-<pid>",
  },
  {
    name: "metrics-port",
    kind: "int",
    commands: CLUSTER,
    group: "Output",
    description: "Port of the Prometheus /metrics endpoint (0: off)",
    metavar: "PORT",
    min: 0,
    max: 65535,
    defaults: { coordinator: 9464, worker: 9465, train: 0 },
  },
  {
    name: "metrics-host",
    kind: "string",
    commands: CLUSTER,
    group: "Output",
    description: "Address the metrics endpoint listens on (containers use 0.0.0.0)",
    metavar: "HOST",
    pattern: /^\S{1,253}$/,
    patternText: "a host name or IP address",
    default: "127.0.0.1",
  },
  {
    name: "targets-file",
    kind: "path",
    commands: ["train"],
    group: "Output",
    description:
      "Write a Prometheus file_sd targets file: the coordinator on --metrics-port, local worker i on that port + i",
    metavar: "FILE",
    defaultText: "not written",
  },
  {
    name: "ui-port",
    kind: "int",
    commands: RUNNERS,
    group: "Output",
    description:
      "Port of the live training page: loss, accuracy, first-layer weights, draw a digit (0: off; npm start turns it on)",
    metavar: "PORT",
    min: 0,
    max: 65535,
    default: 0,
  },
  {
    name: "ui-host",
    kind: "string",
    commands: RUNNERS,
    group: "Output",
    description: "Address the live page listens on (containers use 0.0.0.0)",
    metavar: "HOST",
    pattern: /^\S{1,253}$/,
    patternText: "a host name or IP address",
    default: "127.0.0.1",
  },
  // Output
  {
    name: "trace",
    kind: "path",
    commands: ["train", "coordinator", "worker"],
    group: "Output",
    description:
      "Write a Chrome trace-event JSON of each step (send, wait, results, update; a worker's wait, compute, send) at the end: open it in Perfetto or chrome://tracing. train --workers N merges its workers' tracks in",
    metavar: "FILE",
    defaultText: "no trace",
  },
  {
    name: "json",
    kind: "boolean",
    commands: ["train", "coordinator", "evaluate", "predict"],
    group: "Output",
    description: "Print results as JSON lines instead of text",
    default: false,
  },
  {
    name: "log-level",
    kind: "enum",
    commands: LOGGERS,
    group: "Output",
    description: "Log level (logs go to stderr)",
    values: LOG_LEVELS,
    default: "info",
  },
  {
    name: "log-format",
    kind: "enum",
    commands: LOGGERS,
    group: "Output",
    description:
      "Log lines: auto (readable lines when stderr is a terminal, else JSON), text (readable lines) or json",
    values: LOG_FORMATS,
    default: "auto",
  },
  {
    name: "dry-run",
    kind: "boolean",
    commands: CLUSTER,
    group: "Output",
    description: "Validate the configuration, print it as JSON and exit",
    default: false,
  },
];

// ---------------------------------------------------------------------------
// Per-command option types (camelCase keys of the table's names)

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
  kernel: KernelName;
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

export interface TrainOptions extends RunOptions, ClusterOptions {
  workers: number;
  stepTimeout: number;
  dispatch: Dispatch;
  dataPort: number;
  dataHost: string;
  advertiseHost: string;
  targetsFile?: string;
}

export interface CoordinatorOptions extends RunOptions, ClusterOptions {
  runId: string;
  stepTimeout: number;
  dispatch: Dispatch;
  dataPort: number;
  dataHost: string;
  /** Unset: this host's name (see coordinator/command.ts). */
  advertiseHost?: string;
}

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

export interface EvaluateOptions {
  model: string;
  data?: string;
  testLimit?: number;
  json: boolean;
}

export interface PredictOptions {
  model: string;
  /** Test-set indices to predict. */
  index?: number[];
  data?: string;
  json: boolean;
}

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

// ---------------------------------------------------------------------------
// Table queries

/** `train-limit` -> `trainLimit`: the key of an option in parsed options. */
export function optionKey(name: string): string {
  return name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** The environment variable that sets an option. */
export function envVarOf(def: OptionDef): string {
  return def.env ?? `GRADFLEET_${def.name.toUpperCase().replace(/-/g, "_")}`;
}

/** The options a command accepts, in table order. */
export function optionsOf(command: CommandName): OptionDef[] {
  return OPTIONS.filter((o) => o.commands.includes(command));
}

/** The option named `name` (without dashes), if any. */
export function findOption(name: string): OptionDef | undefined {
  return OPTIONS.find((o) => o.name === name);
}

/**
 * Every environment variable a command reads, sorted. Deploy manifests
 * (compose, Kubernetes) must set no variable outside this list.
 */
export function envVarsOf(command: CommandName): string[] {
  return [...new Set(optionsOf(command).map(envVarOf))].sort();
}

/** Every environment variable any command reads, sorted. */
export function allEnvVars(): string[] {
  return [...new Set(OPTIONS.map(envVarOf))].sort();
}

/**
 * The `GRADFLEET_*` variables set (non-empty) in `env` that `command` does
 * not read: usually a typo in a manifest. The CLI may warn about them.
 */
export function unreadEnvVars(command: CommandName, env: NodeJS.ProcessEnv): string[] {
  const read = new Set(envVarsOf(command));
  return Object.keys(env)
    .filter((k) => k.startsWith("GRADFLEET_") && env[k] !== "" && env[k] !== undefined && !read.has(k))
    .sort();
}

/** Whether a command must be given the option. */
export function isRequired(def: OptionDef, command: CommandName): boolean {
  return def.required === true || (Array.isArray(def.required) && def.required.includes(command));
}

/** The default of an option for a command (computed defaults are evaluated). */
export function defaultOf(def: OptionDef, command: CommandName): OptionValue | undefined {
  const perCommand = def.defaults?.[command];
  if (perCommand !== undefined) return perCommand;
  return typeof def.default === "function" ? def.default() : def.default;
}

/**
 * The default of an option as the help shows it: for one command, or (no
 * command) for all, e.g. `9464 (coordinator); 9465 (worker); 0 (train)`.
 */
export function defaultText(def: OptionDef, command?: CommandName): string | undefined {
  if (command !== undefined) {
    const value = def.defaults?.[command] ?? (typeof def.default === "function" ? undefined : def.default);
    if (value !== undefined) return formatValue(value);
    return typeof def.defaultText === "string" ? def.defaultText : def.defaultText?.[command];
  }
  const byText = new Map<string, CommandName[]>();
  for (const c of def.commands) {
    const text = defaultText(def, c);
    if (text !== undefined) byText.set(text, [...(byText.get(text) ?? []), c]);
  }
  if (byText.size <= 1 && [...byText.values()].every((cs) => cs.length === def.commands.length)) {
    return [...byText.keys()][0];
  }
  return [...byText].map(([text, cs]) => `${text} (${cs.join(", ")})`).join("; ");
}

/** A value as it would be written on the command line. */
export function formatValue(value: OptionValue): string {
  return Array.isArray(value) ? value.join(",") : String(value);
}

/** The value placeholder of a flag in the help: `N`, `X`, `NAME`, `PATH`... */
export function metavarOf(def: OptionDef): string {
  if (def.metavar) return def.metavar;
  switch (def.kind) {
    case "int":
      return "N";
    case "float":
      return "X";
    case "enum":
      return "NAME";
    case "path":
      return "PATH";
    case "intlist":
      return "N,N,...";
    case "string":
      return "TEXT";
    case "boolean":
      return "";
  }
}

/** What an option accepts, in words: `an integer >= 1`, `one of sgd, momentum, adam`. */
export function describeAccepted(def: OptionDef): string {
  switch (def.kind) {
    case "int":
      return `an integer${rangeText(def.min, def.max, false, false)}`;
    case "float":
      return `a number${rangeText(def.min, def.max, def.minExclusive ?? false, def.maxExclusive ?? false)}`;
    case "enum":
      return `one of ${def.values.join(", ")}`;
    case "intlist": {
      const min = def.min ?? 1;
      const what = min === 1 ? "positive integers" : `integers${rangeText(min, def.max, false, false)}`;
      return `at least ${def.minItems ?? 1} comma-separated ${what}`;
    }
    case "boolean":
      return "true, false, 1 or 0";
    case "path":
      return "a path";
    case "string":
      return def.patternText ?? "text";
  }
}

function rangeText(min: number | undefined, max: number | undefined, minEx: boolean, maxEx: boolean): string {
  if (min !== undefined && max !== undefined) {
    if (!minEx && !maxEx) return ` from ${min} to ${max}`;
    return ` ${minEx ? ">" : ">="} ${min} and ${maxEx ? "<" : "<="} ${max}`;
  }
  if (min !== undefined) return ` ${minEx ? ">" : ">="} ${min}`;
  if (max !== undefined) return ` ${maxEx ? "<" : "<="} ${max}`;
  return "";
}

// ---------------------------------------------------------------------------
// Value parsing

const INT_RE = /^[+-]?\d+$/;
// Decimal notation only: no hex, no Infinity/NaN, no empty string (Number("") is 0).
const FLOAT_RE = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/** Where a raw value came from, for error messages. */
export interface ValueOrigin {
  source: "flag" | "env";
  envVar?: string;
}

/** `--epochs` or `--epochs (from GRADFLEET_EPOCHS)`: the prefix of a value error. */
function who(def: OptionDef, origin: ValueOrigin): string {
  return origin.source === "env" ? `--${def.name} (from ${origin.envVar})` : `--${def.name}`;
}

/** A raw value quoted for an error: one line, bounded length, secrets hidden. */
function quote(def: OptionDef, raw: string): string {
  let shown = def.redact ? (def.redact as (v: string) => string)(raw) : raw;
  if (shown.length > 80) shown = `${shown.slice(0, 77)}...`;
  return JSON.stringify(shown);
}

function valueError(def: OptionDef, origin: ValueOrigin, raw: string, problem: string): UsageError {
  return new UsageError(`${who(def, origin)}: ${quote(def, raw)} ${problem}`, {
    flag: `--${def.name}`,
    envVar: origin.envVar,
  });
}

function parseNumber(def: IntOption | FloatOption, raw: string, origin: ValueOrigin): number {
  const accepted = describeAccepted(def);
  const text = raw.trim();
  if (!FLOAT_RE.test(text)) throw valueError(def, origin, raw, `is not a number; expected ${accepted}`);
  if (def.kind === "int" && !INT_RE.test(text)) {
    throw valueError(def, origin, raw, `is not an integer; expected ${accepted}`);
  }
  const n = Number(text);
  if (def.kind === "int" && !Number.isSafeInteger(n)) {
    throw valueError(def, origin, raw, `is out of range; expected ${accepted}`);
  }
  const minEx = def.kind === "float" && def.minExclusive;
  const maxEx = def.kind === "float" && def.maxExclusive;
  const low = def.min !== undefined && (n < def.min || (minEx && n === def.min));
  const high = def.max !== undefined && (n > def.max || (maxEx && n === def.max));
  if (!Number.isFinite(n) || low || high) {
    throw valueError(def, origin, raw, `is out of range; expected ${accepted}`);
  }
  return n;
}

function parseIntList(def: IntListOption, raw: string, origin: ValueOrigin): number[] {
  const accepted = describeAccepted(def);
  const parts = raw.split(",").map((p) => p.trim());
  if (parts.some((p) => p === "")) {
    throw valueError(def, origin, raw, `has an empty entry; expected ${accepted}`);
  }
  const min = def.min ?? 1;
  const out: number[] = [];
  for (const p of parts) {
    if (!INT_RE.test(p)) throw valueError(def, origin, raw, `has ${JSON.stringify(p)}; expected ${accepted}`);
    const n = Number(p);
    if (!Number.isSafeInteger(n) || n < min || (def.max !== undefined && n > def.max)) {
      const bound = def.max !== undefined ? ` and at most ${def.max}` : "";
      throw valueError(def, origin, raw, `has ${p}; entries must be at least ${min}${bound}`);
    }
    out.push(n);
  }
  if (out.length < (def.minItems ?? 1)) {
    throw valueError(
      def,
      origin,
      raw,
      `has ${out.length} entr${out.length === 1 ? "y" : "ies"}; expected ${accepted}`,
    );
  }
  return out;
}

function parseBoolean(def: BooleanOption, raw: string, origin: ValueOrigin): boolean {
  const v = raw.trim().toLowerCase();
  if (v === "1" || v === "true") return true;
  if (v === "0" || v === "false") return false;
  throw valueError(def, origin, raw, `is not one of true, false, 1, 0`);
}

/**
 * Parses and validates one raw value of an option, as given by a flag or an
 * environment variable. Throws a one-line UsageError naming the flag, the
 * value and what is accepted.
 */
export function parseValue(
  def: OptionDef,
  raw: string,
  origin: ValueOrigin = { source: "flag" },
): OptionValue {
  let value: OptionValue;
  switch (def.kind) {
    case "int":
    case "float":
      value = parseNumber(def, raw, origin);
      break;
    case "intlist":
      value = parseIntList(def, raw, origin);
      break;
    case "boolean":
      value = parseBoolean(def, raw, origin);
      break;
    case "enum":
      if (def.removed && Object.hasOwn(def.removed, raw))
        throw valueError(def, origin, raw, def.removed[raw]);
      if (!def.values.includes(raw))
        throw valueError(def, origin, raw, `is not one of ${def.values.join(", ")}`);
      value = raw;
      break;
    case "path":
      if (raw.trim() === "") throw valueError(def, origin, raw, "is empty; expected a path");
      value = raw;
      break;
    case "string":
      if (def.pattern && !def.pattern.test(raw)) {
        throw valueError(def, origin, raw, `is not valid; expected ${describeAccepted(def)}`);
      }
      value = raw;
      break;
  }
  const problem = def.check ? (def.check as (v: OptionValue) => string | undefined)(value) : undefined;
  if (problem) throw valueError(def, origin, raw, problem);
  return value;
}

/** Why a string is not a usable Redis URL, or undefined when it is. */
export function checkRedisUrl(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return "is not a URL; expected redis://HOST:PORT or rediss://HOST:PORT";
  }
  if (url.protocol !== "redis:" && url.protocol !== "rediss:") {
    return `has protocol ${url.protocol}; expected redis:// or rediss://`;
  }
  if (url.hostname === "") return "has no host; expected redis://HOST:PORT or rediss://HOST:PORT";
  // ioredis reads the path as the database number.
  if (!/^\/?(\d+)?$/.test(url.pathname)) {
    return `has path ${url.pathname}; the only path allowed is a database number, e.g. /0`;
  }
  // The connection reads user, password, host, port and database only: a
  // query (`?password=...`, as some clients accept) would be silently
  // ignored, and the server would then say that no password was given.
  if (url.search !== "" || url.hash !== "") {
    const names = [...url.searchParams.keys()];
    const password = names.includes("password")
      ? "; give the password before the host instead: redis://:PASSWORD@HOST:PORT (or redis://USER:PASSWORD@HOST:PORT)"
      : "";
    const what = url.search !== "" ? `a query (${names.map((k) => `${k}=`).join(", ")})` : "a #fragment";
    return `has ${what}, which is not read here${password}`;
  }
  return undefined;
}

/** The URL with its password replaced by `***`, for logs and errors. */
export function redactUrl(text: string): string {
  try {
    const url = new URL(text);
    // Query values too: `?password=` is refused, but the refusal quotes the URL.
    const query = [...url.searchParams.keys()];
    if (url.password === "" && query.length === 0 && url.hash === "") return text;
    if (url.password !== "") url.password = "***";
    if (query.length > 0) url.search = query.map((k) => `${encodeURIComponent(k)}=***`).join("&");
    if (url.hash !== "") url.hash = "***";
    return url.toString();
  } catch {
    // Not a URL: hide anything between `:` and `@` that looks like credentials.
    return text.replace(/:\/\/([^:@/]*):[^@/]*@/, "://$1:***@");
  }
}

// ---------------------------------------------------------------------------
// Command-line parsing

/** The result of parsing a command line. */
export interface ParsedCommand {
  /** The subcommand; `""` for `gradfleet --help`. */
  command: string;
  /**
   * Values by camelCase key (`trainLimit`). An option without a value (no
   * flag, no env, no default) is absent. Empty when `help` is set.
   */
  options: Record<string, unknown>;
  positionals: string[];
  /** `--help`/`-h`/`help` was given: print {@link helpText} and exit 0; nothing was validated. */
  help: boolean;
  /** Where each present option's value came from, by the same keys as `options`. */
  sources: Record<string, OptionSource>;
}

/**
 * Parses `argv` (without node and the script: `process.argv.slice(2)`) and
 * the environment into a command and its validated options.
 *
 * Flags win over environment variables, which win over defaults. A flag given
 * twice keeps its last value (so `npm start -- --workers 4` overrides the
 * script's own `--workers 2`). An environment variable set to the empty
 * string counts as unset (compose's `${VAR:-}` yields that). `--` ends the
 * options. `--help` anywhere before `--` wins over every other argument.
 *
 * @throws {UsageError} for an unknown command or flag, a missing or invalid
 *   value, a missing required option, or an unexpected positional.
 */
export function parseCommandLine(argv: readonly string[], env: NodeJS.ProcessEnv): ParsedCommand {
  const first = argv[0];
  if (first === undefined) {
    throw new UsageError(
      `no command given; expected one of ${COMMAND_NAMES.join(", ")} (see gradfleet --help)`,
    );
  }
  if (first === "--help" || first === "-h" || first === "help") {
    const topic = first === "help" ? argv[1] : undefined;
    if (topic !== undefined && !isCommand(topic)) throw unknownCommand(topic);
    return { command: topic ?? "", options: {}, positionals: [], help: true, sources: {} };
  }
  if (first.startsWith("-")) {
    throw new UsageError(
      `${first}: options come after the command; expected one of ${COMMAND_NAMES.join(", ")} first`,
    );
  }
  if (!isCommand(first)) throw unknownCommand(first);
  const command = first;
  const rest = argv.slice(1);

  const end = rest.indexOf("--");
  const optionPart = end === -1 ? rest : rest.slice(0, end);
  if (optionPart.some((a) => a === "--help" || a === "-h")) {
    return { command, options: {}, positionals: [], help: true, sources: {} };
  }

  const accepted = optionsOf(command);
  const byName = new Map(accepted.map((d) => [d.name, d]));
  const fromFlags = new Map<string, OptionValue>();
  const positionals: string[] = [];

  for (let i = 0; i < optionPart.length; i++) {
    const arg = optionPart[i];
    if (!arg.startsWith("-") || arg === "-") {
      positionals.push(arg);
      continue;
    }
    if (!arg.startsWith("--")) throw unknownFlag(command, arg, arg);
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    const def = byName.get(name);
    if (!def) throw unknownFlag(command, `--${name}`, name);
    let raw: string;
    if (eq !== -1) {
      raw = arg.slice(eq + 1);
      if (raw === "") throw missingValue(def);
    } else if (def.kind === "boolean") {
      raw = "true";
    } else {
      const next = optionPart[i + 1];
      // A value may start with one dash (`--seed -1` is then refused as out of
      // range, which says more than "missing value"), never with two.
      if (next === undefined || next.startsWith("--")) throw missingValue(def);
      raw = next;
      i++;
    }
    fromFlags.set(def.name, parseValue(def, raw, { source: "flag" }));
  }
  if (end !== -1) positionals.push(...rest.slice(end + 1));

  const options: Record<string, unknown> = {};
  const sources: Record<string, OptionSource> = {};
  for (const def of accepted) {
    const key = optionKey(def.name);
    const envVar = envVarOf(def);
    const envRaw = env[envVar];
    if (fromFlags.has(def.name)) {
      options[key] = fromFlags.get(def.name);
      sources[key] = "flag";
    } else if (envRaw !== undefined && envRaw !== "") {
      options[key] = parseValue(def, envRaw, { source: "env", envVar });
      sources[key] = "env";
    } else {
      const value = defaultOf(def, command);
      if (value !== undefined) {
        options[key] = value;
        sources[key] = "default";
      } else if (isRequired(def, command)) {
        throw new UsageError(
          `--${def.name}: required; give --${def.name} ${metavarOf(def)} or set ${envVar}`,
          {
            flag: `--${def.name}`,
          },
        );
      }
    }
  }

  for (const def of accepted) {
    const key = optionKey(def.name);
    const set = def.kind === "boolean" ? options[key] === true : options[key] !== undefined;
    if (!set || !def.requires) continue;
    for (const other of def.requires) {
      if (options[optionKey(other)] !== undefined) continue;
      const otherDef = findOption(other);
      const envHint = otherDef ? ` (or ${envVarOf(otherDef)})` : "";
      const origin: ValueOrigin =
        sources[key] === "env" ? { source: "env", envVar: envVarOf(def) } : { source: "flag" };
      throw new UsageError(`${who(def, origin)}: needs --${other}${envHint} as well`, {
        flag: `--${def.name}`,
        envVar: origin.envVar,
      });
    }
  }

  checkPositionals(commandDef(command), positionals);
  return { command, options, positionals, help: false, sources };
}

/**
 * The options of a parsed command, typed for that command.
 * @throws {Error} when `parsed` is another command's or a help request (a bug in the caller).
 */
export function typedOptions<C extends CommandName>(parsed: ParsedCommand, command: C): CommandOptions[C] {
  if (parsed.command !== command || parsed.help) {
    throw new Error(`typedOptions: the command line is for "${parsed.command || "help"}", not "${command}"`);
  }
  return parsed.options as unknown as CommandOptions[C];
}

/**
 * The options with secrets hidden (a password in the Redis URL), for
 * `--dry-run` and startup logs.
 */
export function redactedOptions(parsed: ParsedCommand): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(parsed.options)) {
    const def = OPTIONS.find((o) => optionKey(o.name) === key);
    out[key] =
      def?.redact && typeof value === "string" ? (def.redact as (v: string) => string)(value) : value;
  }
  return out;
}

function checkPositionals(def: CommandDef, positionals: string[]): void {
  const spec = def.positionals;
  if (!spec) {
    if (positionals.length > 0) {
      throw new UsageError(
        `unexpected argument ${JSON.stringify(positionals[0])}; ${def.name} takes no positional arguments (options start with --)`,
      );
    }
    return;
  }
  if (positionals.length < spec.min) {
    throw new UsageError(
      `${def.name}: needs at least ${spec.min} ${spec.name} argument${spec.min === 1 ? "" : "s"}`,
    );
  }
  if (spec.max !== undefined && positionals.length > spec.max) {
    throw new UsageError(
      `${def.name}: takes at most ${spec.max} ${spec.name} argument${spec.max === 1 ? "" : "s"}`,
    );
  }
}

function missingValue(def: OptionDef): UsageError {
  return new UsageError(`--${def.name}: needs a value (${describeAccepted(def)})`, { flag: `--${def.name}` });
}

function unknownCommand(name: string): UsageError {
  const guess = closest(name, COMMAND_NAMES);
  const hint = guess ? `did you mean ${guess}? ` : "";
  return new UsageError(
    `unknown command ${JSON.stringify(name)}; ${hint}expected one of ${COMMAND_NAMES.join(", ")}`,
  );
}

function unknownFlag(command: CommandName, flag: string, name: string): UsageError {
  const elsewhere = findOption(name);
  if (elsewhere) {
    return new UsageError(`${flag}: not an option of ${command} (only of ${elsewhere.commands.join(", ")})`, {
      flag,
    });
  }
  const guess = closest(
    name,
    optionsOf(command).map((o) => o.name),
  );
  const hint = guess ? `did you mean --${guess}? ` : "";
  return new UsageError(`${flag}: unknown option; ${hint}gradfleet ${command} --help lists the options`, {
    flag,
  });
}

/** The nearest candidate within edit distance 2 of `word` (1 for words of up to 3 letters), if any. */
function closest(word: string, candidates: readonly string[]): string | undefined {
  const limit = Math.min(2, Math.max(1, Math.ceil(word.length / 3)));
  let best: string | undefined;
  let bestDistance = limit + 1;
  for (const c of candidates) {
    const d = editDistance(word, c);
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}
