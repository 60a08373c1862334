/**
 * `gradfleet <command> [flags]`: parses the command line (flags, then
 * environment variables, then defaults), and runs the command. Usage errors
 * print one line and exit 2; other failures print `gradfleet: <message>` and
 * exit 1.
 */

import { DataError } from "../core/data/index.js";
import { SafeTensorsError } from "../core/safetensors.js";
import { RunSetupError } from "../run/setup-error.js";
import { runCoordinatorCommand } from "./coordinator-command.js";
import { runEvaluateCommand } from "./evaluate-command.js";
import { helpText } from "./help.js";
import {
  type ParsedCommand,
  parseCommandLine,
  redactedOptions,
  typedOptions,
  UsageError,
} from "./options.js";
import { runPredictCommand } from "./predict-command.js";
import { runTrainCommand } from "./train-command.js";
import { runWeightsCommand } from "./weights-command.js";
import { runWorkerCommand } from "./worker-command.js";

/** Runs the CLI; resolves to the process exit code. */
export async function runCli(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let parsed: ParsedCommand;
  try {
    parsed = parseCommandLine(argv, env);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`gradfleet: ${e.message}\n`);
      return e.exitCode;
    }
    throw e;
  }
  if (parsed.help) {
    process.stdout.write(`${helpText(parsed.command || undefined)}\n`);
    return 0;
  }
  if ((parsed.options as { dryRun?: boolean }).dryRun) {
    process.stdout.write(
      `${JSON.stringify({ command: parsed.command, options: redactedOptions(parsed) })}\n`,
    );
    return 0;
  }
  try {
    switch (parsed.command) {
      case "train":
        return await runTrainCommand(typedOptions(parsed, "train"));
      case "coordinator":
        return await runCoordinatorCommand(typedOptions(parsed, "coordinator"));
      case "worker":
        return await runWorkerCommand(typedOptions(parsed, "worker"));
      case "evaluate":
        return await runEvaluateCommand(typedOptions(parsed, "evaluate"));
      case "predict":
        return await runPredictCommand(typedOptions(parsed, "predict"), parsed.positionals);
      case "weights":
        return await runWeightsCommand(typedOptions(parsed, "weights"));
      default:
        process.stderr.write(`gradfleet: unknown command ${parsed.command}\n`);
        return 2;
    }
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`gradfleet: ${e.message}\n`);
      return e.exitCode;
    }
    // A run that cannot start as asked is told like a usage error.
    if (e instanceof RunSetupError) {
      process.stderr.write(`gradfleet: ${e.message}\n`);
      return 2;
    }
    if (e instanceof DataError || e instanceof SafeTensorsError) {
      process.stderr.write(`gradfleet: ${e.message}\n`);
      return 1;
    }
    process.stderr.write(`gradfleet: ${(e as Error).message ?? e}\n`);
    if (process.env.GRADFLEET_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    return 1;
  }
}
