import { describe, expect, it } from "vitest";
import { cpuMs, hasProc, statCpuMs, statFields } from "../bench/proc.js";

describe("bench /proc readers", () => {
  it("split a stat line after the last parenthesis of the command name", () => {
    // Field 14 (utime) = 250 ticks, field 15 (stime) = 30 ticks; the name holds spaces and parentheses.
    const stat = "4242 (node (a) b) S 1 4242 4242 0 -1 4194560 9 0 0 0 250 30 0 0 20 0 11 0 100 0 0";
    expect(statFields(stat).slice(0, 2)).toEqual(["S", "1"]);
    expect(statCpuMs(stat)).toBe(2800);
  });

  it.runIf(hasProc())("read this process's CPU time, and NaN for a process that does not exist", () => {
    expect(cpuMs(process.pid)).toBeGreaterThanOrEqual(0);
    expect(cpuMs(2 ** 22 + 1)).toBeNaN();
  });
});
