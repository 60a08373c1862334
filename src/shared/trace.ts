/**
 * `--trace FILE`: a Chrome trace-event JSON of where a process's time went,
 * step by step (open it in https://ui.perfetto.dev or chrome://tracing), like
 * Horovod's timeline. Each process is one track (pid = its process id, named
 * by its role); timestamps are microseconds of the wall clock
 * (`performance.timeOrigin + performance.now()`), so the tracks of processes
 * on one machine line up, and those of several machines as well as their
 * clocks agree.
 *
 * Spans are kept in memory (at most MAX_EVENTS; later ones are counted and
 * dropped) and written once, atomically, when the process ends.
 */
import { readFile, unlink } from "node:fs/promises";
import { writeFileAtomic } from "../core/write-atomic.js";

/** Spans kept per process: about 100 bytes each in memory. */
const MAX_EVENTS = 2_000_000;

/** One trace event (the subset of the format used here). */
interface TraceEvent {
  name: string;
  ph: "X" | "M" | "i";
  ts?: number;
  dur?: number;
  pid: number;
  tid: number;
  args?: Record<string, unknown>;
  s?: "p";
}

/** Microseconds on the clock every trace of this machine shares. */
export function traceNow(): number {
  return (performance.timeOrigin + performance.now()) * 1000;
}

/** A process's trace: spans in memory, written by close(). */
export class Trace {
  private readonly events: TraceEvent[] = [];
  private dropped = 0;

  /**
   * @param file where close() writes the JSON
   * @param role the track's name (coordinator, worker w1, ...)
   */
  constructor(
    readonly file: string,
    role: string,
  ) {
    this.events.push({ name: "process_name", ph: "M", pid: process.pid, tid: 0, args: { name: role } });
  }

  /** A span from `startUs` to `endUs` (see traceNow). */
  span(name: string, startUs: number, endUs: number, args?: Record<string, unknown>): void {
    if (this.events.length >= MAX_EVENTS) {
      this.dropped++;
      return;
    }
    this.events.push({
      name,
      ph: "X",
      ts: startUs,
      dur: Math.max(0, endUs - startUs),
      pid: process.pid,
      tid: 0,
      args,
    });
  }

  /** A point in time (a worker joined, a deadline passed). */
  instant(name: string, args?: Record<string, unknown>): void {
    if (this.events.length >= MAX_EVENTS) {
      this.dropped++;
      return;
    }
    this.events.push({ name, ph: "i", s: "p", ts: traceNow(), pid: process.pid, tid: 0, args });
  }

  /**
   * Writes the trace, with the events of `others` (trace files of other
   * processes, e.g. local workers) merged in and those files removed.
   */
  async close(others: string[] = []): Promise<void> {
    const events = [...this.events];
    if (this.dropped > 0) {
      events.push({
        name: `${this.dropped} spans dropped (more than ${MAX_EVENTS})`,
        ph: "i",
        s: "p",
        ts: traceNow(),
        pid: process.pid,
        tid: 0,
      });
    }
    for (const f of others) {
      try {
        const other = JSON.parse(await readFile(f, "utf8")) as { traceEvents?: TraceEvent[] };
        if (Array.isArray(other.traceEvents)) events.push(...other.traceEvents);
        await unlink(f);
      } catch {
        // A worker that died before writing its trace: its track is missing.
      }
    }
    const json = JSON.stringify({ traceEvents: events, displayTimeUnit: "ms" });
    await writeFileAtomic(this.file, Buffer.from(json, "utf8"));
  }
}
