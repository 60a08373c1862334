/**
 * Help text and the README's options table, both generated from the option
 * table in ./options.ts so they always say what the parser does.
 */
import {
  COMMANDS,
  type CommandDef,
  type CommandName,
  commandDef,
  defaultText,
  describeAccepted,
  envVarOf,
  isRequired,
  metavarOf,
  OPTION_GROUPS,
  OPTIONS,
  type OptionDef,
  optionsOf,
} from "./options.js";

const PRECEDENCE =
  "Every option can also be set by its environment variable; a flag wins over the environment, " +
  "which wins over the default.";

/**
 * The help of the CLI (no command, or `""`) or of one command: its usage,
 * and every flag with its environment variable, default and accepted values.
 * @throws {UsageError} for an unknown command.
 */
export function helpText(command?: string): string {
  if (command === undefined || command === "") return mainHelp();
  return commandHelp(commandDef(command));
}

function mainHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 2;
  const lines = [
    "gradfleet: data-parallel training of a multilayer perceptron over a cluster of Node.js workers",
    "",
    "Usage: gradfleet <command> [options]",
    "       gradfleet <command> --help",
    "",
    "Commands:",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    "",
    PRECEDENCE,
    "The variable of --some-option is GRADFLEET_SOME_OPTION, except REDIS_URL for --redis-url.",
  ];
  return `${lines.join("\n")}\n`;
}

function usageLine(def: CommandDef): string {
  const p = def.positionals;
  const positional = p ? ` ${p.min === 0 ? `[${p.name}...]` : `${p.name}...`}` : "";
  return `Usage: gradfleet ${def.name} [options]${positional}`;
}

/** `--epochs N`, `--json`: a flag as the help and the README show it. */
function flagText(def: OptionDef): string {
  const metavar = metavarOf(def);
  return metavar ? `--${def.name} ${metavar}` : `--${def.name}`;
}

/** `env X; default Y; accepted Z`, the second help line of an option. */
function detailText(def: OptionDef, command: CommandName): string {
  const parts = [`env ${envVarOf(def)}`];
  if (isRequired(def, command)) parts.push("required");
  else {
    const d = defaultText(def, command);
    if (d !== undefined) parts.push(`default ${d}`);
  }
  parts.push(
    def.kind === "boolean"
      ? `--${def.name} alone means true; --${def.name}=VALUE and the env take true, false, 1, 0`
      : describeAccepted(def),
  );
  return parts.join("; ");
}

function commandHelp(def: CommandDef): string {
  const command = def.name as CommandName;
  const options = optionsOf(command);
  const width = Math.min(28, Math.max(...options.map((o) => flagText(o).length)) + 2);
  const indent = " ".repeat(2 + width);
  const lines = [usageLine(def), "", `${def.summary}.`];
  if (def.positionals) lines.push("", `  ${def.positionals.name}  ${def.positionals.description}`);
  for (const group of OPTION_GROUPS) {
    const inGroup = options.filter((o) => o.group === group);
    if (inGroup.length === 0) continue;
    lines.push("", `${group}:`);
    for (const o of inGroup) {
      const flag = flagText(o);
      // A flag longer than the column gets its description on the next line.
      if (flag.length + 2 > width) lines.push(`  ${flag}`, `${indent}${o.description}`);
      else lines.push(`  ${flag.padEnd(width)}${o.description}`);
      lines.push(`${indent}${detailText(o, command)}`);
    }
  }
  lines.push("", `  ${"-h, --help".padEnd(width)}Show this help`, "", PRECEDENCE);
  return `${lines.join("\n")}\n`;
}

/** Escapes text for a Markdown table cell (pipes, HTML-like `<placeholders>`). */
function cell(text: string): string {
  return text.replace(/\|/g, "\\|").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/**
 * A Markdown table of the options, for the README: flag, environment
 * variable, default, accepted values and description, plus the commands
 * column when no command is given.
 */
export function optionsMarkdownTable(command?: CommandName): string {
  const options = command ? optionsOf(command) : [...OPTIONS];
  const head = command
    ? ["Flag", "Environment variable", "Default", "Accepted values", "Description"]
    : ["Flag", "Environment variable", "Commands", "Default", "Accepted values", "Description"];
  const rows = options.map((o) => {
    const required = command ? isRequired(o, command) : o.commands.every((c) => isRequired(o, c));
    const d = required ? "required" : (defaultText(o, command) ?? "");
    const row = [
      `\`${flagText(o)}\``,
      `\`${envVarOf(o)}\``,
      ...(command ? [] : [o.commands.join(", ")]),
      cell(d),
      cell(o.kind === "boolean" ? "flag; env and `=VALUE`: true, false, 1, 0" : describeAccepted(o)),
      cell(o.description),
    ];
    return `| ${row.join(" | ")} |`;
  });
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`, ...rows];
  return `${lines.join("\n")}\n`;
}
