/**
 * The shape of an entry of the option table (see option-table.ts): its kind,
 * the commands that take it, its default and what it accepts.
 */
import type { CommandName } from "./commands.js";

/** A parsed option value. */
export type OptionValue = number | string | boolean | number[];

/** Where an option's value came from. */
export type OptionSource = "flag" | "env" | "default";

/** Sections of the help text, in order. */
export const OPTION_GROUPS = ["Model", "Training", "Data", "Checkpoints", "Cluster", "Output"] as const;
/** A section of the help text. */
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

/** An integer option. */
export interface IntOption extends OptionBase {
  kind: "int";
  min?: number;
  max?: number;
}
/** A decimal number option. */
export interface FloatOption extends OptionBase {
  kind: "float";
  min?: number;
  max?: number;
  /** `min` itself is refused (e.g. a learning rate of 0). */
  minExclusive?: boolean;
  /** `max` itself is refused (e.g. a momentum of 1). */
  maxExclusive?: boolean;
}
/** A text option, checked against a pattern when it has one. */
export interface StringOption extends OptionBase {
  kind: "string";
  pattern?: RegExp;
  /** What the pattern accepts, in words, for errors and help. */
  patternText?: string;
}
/** A file or directory path (any non-empty text). */
export interface PathOption extends OptionBase {
  kind: "path";
}
/** One of a fixed list of words. */
export interface EnumOption extends OptionBase {
  kind: "enum";
  values: readonly string[];
  /** Values that were accepted once: each refused with its own line (why, and what to do instead). */
  removed?: Readonly<Record<string, string>>;
}
/** Comma-separated integers (`--layers`). */
export interface IntListOption extends OptionBase {
  kind: "intlist";
  /** Fewest entries (default 1). */
  minItems?: number;
  /** Smallest entry (default 1). */
  min?: number;
  max?: number;
}
/** A flag without a value (true, false, 1 or 0 in the environment). */
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

/** Commands that take the model's flags. */
export const MODEL: readonly CommandName[] = ["train", "coordinator"];
/** Commands that run training (and so coordinate). */
export const RUNNERS: readonly CommandName[] = ["train", "coordinator"];
/** Commands that reach the cluster. */
export const CLUSTER: readonly CommandName[] = ["train", "coordinator", "worker"];
/** Commands that log. */
export const LOGGERS: readonly CommandName[] = ["train", "coordinator", "worker"];
