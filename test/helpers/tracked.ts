/**
 * CLI processes a test file started, so `afterAll` can kill whatever still
 * runs: a test that times out never reaches its own `finally` (vitest does
 * not cancel the awaited promise), and its processes would outlive the run.
 */
import { type CliProcess, type CliResult, startCli, stopCli } from "./cli.js";

/** Starts CLI processes and remembers them. */
export class Tracked {
  private readonly procs: CliProcess[] = [];

  /** `startCli`, remembered. */
  start(args: string[], env: Record<string, string> = {}): CliProcess {
    const p = startCli(args, env);
    this.procs.push(p);
    return p;
  }

  /** `runCli`, remembered. */
  run(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
    return this.start(args, env).done;
  }

  /** Kills (SIGCONT, then SIGKILL) every remembered process still running. */
  async killAll(): Promise<void> {
    const alive = this.procs.filter((p) => p.child.exitCode === null && p.child.signalCode === null);
    for (const p of alive) p.child.kill("SIGCONT");
    await Promise.all(alive.map((p) => stopCli(p, "SIGKILL")));
    this.procs.length = 0;
  }
}
