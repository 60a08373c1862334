/** The commands of `gradfleet`: their names, summaries and positional arguments. */
import { closest } from "./closest.js";
import { UsageError } from "./usage-error.js";

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

/** The name of a command. */
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

/** The error for a command that does not exist, with the nearest one when it is close. */
export function unknownCommand(name: string): UsageError {
  const guess = closest(name, COMMAND_NAMES);
  const hint = guess ? `did you mean ${guess}? ` : "";
  return new UsageError(
    `unknown command ${JSON.stringify(name)}; ${hint}expected one of ${COMMAND_NAMES.join(", ")}`,
  );
}
