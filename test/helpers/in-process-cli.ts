/**
 * The CLI run in the test's own process (no child process to start): for the
 * commands that are fast and do not exit the process, such as `predict` and
 * `weights-image`.
 */
import { runCli } from "../../src/cli/main.js";

/** Runs the CLI with `argv` in this process and collects what it prints and its exit code. */
export async function cliInProcess(
  argv: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const out = process.stdout.write;
  const err = process.stderr.write;
  process.stdout.write = ((chunk: string | Uint8Array) => {
    stdout += String(chunk);
    return true;
  }) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => {
    stderr += String(chunk);
    return true;
  }) as typeof process.stderr.write;
  try {
    return { code: await runCli(argv, {}), stdout, stderr };
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
}
