/**
 * Questions asked of the option table: an option's key, environment
 * variable, default, metavar and accepted values, and which options a
 * command takes.
 */
import type { CommandName } from "./commands.js";
import type { OptionDef, OptionValue } from "./option-def.js";
import { OPTIONS } from "./option-table.js";

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
