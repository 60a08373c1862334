/**
 * THE option table that the parser, the help text, the README table and the
 * deploy-manifest tests all read (see options.ts). This file holds the
 * options of what a run computes (model, training, data, checkpoints);
 * option-table-cluster.ts those of how processes reach each other and
 * report (cluster, output).
 */
import { OPTIMIZERS } from "../core/optimizer.js";
import { KERNEL_CHOICES } from "../core/run-config.js";
import { COSTS, checkParameterCount, HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS } from "../core/spec.js";
import { MODEL, type OptionDef, RUNNERS } from "./option-def.js";
import { CLUSTER_AND_OUTPUT_OPTIONS } from "./option-table-cluster.js";

const UINT32_MAX = 2 ** 32 - 1;
/** Largest `--batch`. */
export const MAX_BATCH = 1_000_000;

/** Model, training, data and checkpoint options, in help order. */
const RUN_OPTIONS: readonly OptionDef[] = [
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
    description:
      "Compute kernel. ref: TypeScript, float64; fast: float32, by the C addon where npm run build found a C " +
      "compiler, else by WebAssembly SIMD, the same bits either way (each process picks its own: " +
      "GRADFLEET_FAST_KERNEL=auto|native|wasm); native, wasm: fast by that implementation only, here and in " +
      "train's workers. The run spec holds ref or fast, so every worker of a run computes the same bits",
    values: KERNEL_CHOICES,
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
];

/**
 * THE option table. Defaults shared by `train` and `coordinator` are the same
 * on purpose: the same flags then give the same run spec, hence the same bits.
 */
export const OPTIONS: readonly OptionDef[] = [...RUN_OPTIONS, ...CLUSTER_AND_OUTPUT_OPTIONS];
