/**
 * Worker processes as the fault tests see them from outside: the scheduler
 * state of a process, from /proc.
 */
import { readFileSync } from "node:fs";

/**
 * The scheduler state of a process's main thread (`R` running or runnable,
 * `S` sleeping, `T` stopped, `Z` zombie, ...), from /proc; undefined where
 * /proc or the process is missing.
 */
export function procState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
  } catch {
    return undefined;
  }
}
