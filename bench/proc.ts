/**
 * What the benchmarks read about processes from Linux's /proc: CPU time,
 * peak resident memory, children and command names. Every reader returns a
 * neutral value (NaN, 0, "" or []) where /proc or the process is missing,
 * so a section on another OS (or racing a process's exit) still runs and
 * says what it could not measure.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";

/** Linux's USER_HZ: /proc reports CPU times in these ticks (100 on every mainstream kernel). */
export const TICK_MS = 10;

/** Whether this machine has a Linux /proc to read processes from. */
export function hasProc(): boolean {
  return existsSync(`/proc/${process.pid}/stat`);
}

/**
 * The fields of a /proc/<pid>/stat line after the command name, from the
 * state (field 3) on. The command name is in parentheses and may itself hold
 * spaces and parentheses, so the split starts after the last ")".
 */
export function statFields(stat: string): string[] {
  return stat
    .slice(stat.lastIndexOf(")") + 2)
    .trim()
    .split(" ");
}

/**
 * CPU milliseconds (user + system, all threads) in a /proc/<pid>/stat line:
 * fields 14 and 15 (utime, stime), in ticks of {@link TICK_MS}.
 */
export function statCpuMs(stat: string): number {
  const f = statFields(stat);
  // statFields starts at field 3: fields 14 and 15 are at 11 and 12.
  return (Number(f[11]) + Number(f[12])) * TICK_MS;
}

/**
 * CPU milliseconds a process has used so far, all its threads (NaN when it
 * is gone or there is no /proc). Children are not included: a process's
 * children are measured on their own.
 */
export function cpuMs(pid: number): number {
  try {
    return statCpuMs(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return Number.NaN;
  }
}

/** A process's command name (/proc/<pid>/comm; "" when it is gone). */
export function procComm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return "";
  }
}

/** A process's arguments (/proc/<pid>/cmdline; [] when it is gone). */
export function procArgs(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").slice(0, -1);
  } catch {
    return [];
  }
}

/** VmHWM of a process in bytes (0 when it is gone or /proc is missing). */
export function vmHwm(pid: number): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/**
 * Pids of the children of `pid`: /proc/<pid>/task/<pid>/children (the main
 * thread's, which is where Node spawns), else a scan of every /proc/<n>/stat.
 */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
      .split(" ")
      .filter((s) => s.trim() !== "")
      .map(Number);
  } catch {
    // No such file (kernel without CONFIG_PROC_CHILDREN, or the process is gone).
  }
  const out: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return out;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const ppid = Number(statFields(readFileSync(`/proc/${e}/stat`, "utf8"))[1]);
      if (ppid === pid) out.push(Number(e));
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}
