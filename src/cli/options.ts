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
 * To add an option, add one entry to the table (option-table.ts or
 * option-table-cluster.ts) and its key to the command's options interface
 * (src/shared/command-options.ts); parsing, help, `envVarsOf` and the
 * Markdown table pick it up.
 *
 * This module gathers the parts for their users: commands.ts (the
 * commands), option-def.ts (what a table entry is), the table,
 * option-queries.ts (questions asked of it), option-values.ts (one value),
 * command-line.ts (a whole command line) and usage-error.ts.
 */

export { OPTIMIZERS, type OptimizerName } from "../core/optimizer.js";
export { KERNELS, type KernelName } from "../core/run-config.js";
export * from "../shared/command-options.js";
export * from "./command-line.js";
export * from "./commands.js";
export * from "./option-def.js";
export * from "./option-queries.js";
export * from "./option-table.js";
export * from "./option-values.js";
export * from "./redis-url.js";
export * from "./usage-error.js";
