/**
 * Runs the real `gradfleet` program (bin/gradfleet.js over dist/, built by
 * `npm test` before vitest starts) as child processes.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

export const BIN = fileURLToPath(new URL("../../bin/gradfleet.js", import.meta.url));

/** What a finished command printed. */
export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The last stdout line parsed as JSON (the `--json` summary), if it is JSON. */
  json?: Record<string, unknown>;
}

/** A running gradfleet process. */
export interface CliProcess {
  child: ChildProcess;
  /** Resolves when it exits. */
  done: Promise<CliResult>;
  stdout(): string;
  stderr(): string;
}

/** Environment for children: no GRADFLEET_* from the outer shell. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("GRADFLEET_")));
  return { ...env, ...extra };
}

/** Every child started here, killed when the test process exits (a timed-out test never reaches its `finally`). */
const children = new Set<ChildProcess>();
process.once("exit", () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});

/** Starts `gradfleet <args>`. */
export function startCli(args: string[], env: Record<string, string> = {}): CliProcess {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: cleanEnv(env),
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  child.once("exit", () => children.delete(child));
  let out = "";
  let err = "";
  child.stdout!.on("data", (d) => {
    out += d;
  });
  child.stderr!.on("data", (d) => {
    err += d;
  });
  const done = new Promise<CliResult>((resolve) => {
    child.on("close", (code, signal) => {
      const last = out.trim().split("\n").pop() ?? "";
      let json: Record<string, unknown> | undefined;
      try {
        json = JSON.parse(last);
      } catch {
        json = undefined;
      }
      resolve({ code, signal, stdout: out, stderr: err, json });
    });
  });
  return { child, done, stdout: () => out, stderr: () => err };
}

/** Runs `gradfleet <args>` to the end. */
export function runCli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return startCli(args, env).done;
}

/** Sends a signal and waits for the exit. */
export async function stopCli(p: CliProcess, signal: NodeJS.Signals = "SIGTERM"): Promise<CliResult> {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill(signal);
  return p.done;
}

/** Waits until `pred()` is true, polling every `ms`; throws after `timeoutMs`. */
export async function waitFor(
  pred: () => boolean | Promise<boolean>,
  timeoutMs = 30_000,
  ms = 50,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, ms));
  }
  throw new Error(`condition not met within ${timeoutMs} ms`);
}

/** The JSON log records in a process's stderr whose message is `msg` (other lines are skipped). */
export function logRecords(stderr: string, msg: string): Record<string, unknown>[] {
  return stderr
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.msg === msg);
}

/** The size of a small training run, as CLI flags (with `--json`). */
export interface RunSize {
  train: number;
  test: number;
  epochs: number;
  batch: number;
  shards: number;
}

/** CLI flags for a run of the given size, JSON output. */
export function runFlags(r: RunSize): string[] {
  return [
    "--train-limit",
    String(r.train),
    "--test-limit",
    String(r.test),
    "--epochs",
    String(r.epochs),
    "--batch",
    String(r.batch),
    "--shards",
    String(r.shards),
    "--json",
  ];
}

/** The run most cluster tests train: 6,000 samples, 2 epochs of batch 64 in 4 shards (a few seconds). */
export const SMALL_RUN: readonly string[] = runFlags({
  train: 6000,
  test: 1000,
  epochs: 2,
  batch: 64,
  shards: 4,
});
