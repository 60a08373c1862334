/**
 * Parsing a command line: the command, its flags, then environment
 * variables, then defaults, into validated options (see options.ts for the
 * precedence rules).
 */
import type { CommandOptions } from "../shared/command-options.js";
import { closest } from "./closest.js";
import {
  COMMAND_NAMES,
  type CommandDef,
  type CommandName,
  commandDef,
  isCommand,
  unknownCommand,
} from "./commands.js";
import type { OptionDef, OptionSource, OptionValue } from "./option-def.js";
import {
  defaultOf,
  describeAccepted,
  envVarOf,
  findOption,
  isRequired,
  metavarOf,
  optionKey,
  optionsOf,
} from "./option-queries.js";
import { OPTIONS } from "./option-table.js";
import { parseValue, type ValueOrigin, who } from "./option-values.js";
import { UsageError } from "./usage-error.js";

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
