/**
 * What benchmark sections share: the section contract, the figures they
 * report and how those are printed — a readable table by default, one JSON
 * object per line with `--json`. Progress goes to stderr, so stdout holds
 * only the results.
 */

import { cpus, loadavg } from "node:os";
import { fastImplementation } from "../src/core/kernel.js";

/** One measured number. Extra fields say what was measured (impl, layers, batch...). */
export interface Figure {
  section: string;
  metric: string;
  value: number;
  unit: string;
  [detail: string]: string | number | boolean;
}

/** Options every section receives. */
export interface BenchOptions {
  /** Fewer and shorter repetitions: a smoke run of the bench itself, not a measurement. */
  quick: boolean;
}

/** A benchmark section: `npm run bench -- --only <name>` runs just this one. */
export interface Section {
  name: string;
  /** One line for `--list`. */
  description: string;
  run(out: Reporter, opts: BenchOptions): Promise<void>;
}

/** Prints figures as JSON lines or tables, and progress to stderr. */
export class Reporter {
  constructor(readonly json: boolean) {}

  /** Records one figure (printed at once in JSON mode). */
  figure(f: Figure): void {
    if (this.json) process.stdout.write(`${JSON.stringify(f)}\n`);
  }

  /** Prints a table (human mode only): a title, column headers and rows of cells. */
  table(title: string, headers: string[], rows: string[][], notes: string[] = []): void {
    if (this.json) return;
    const widths = headers.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? "").length)));
    const line = (cells: string[]) =>
      cells.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join("  ");
    const out = [
      title,
      line(headers),
      widths.map((w) => "-".repeat(w)).join("  "),
      ...rows.map(line),
      ...notes,
    ];
    process.stdout.write(`${out.join("\n")}\n\n`);
  }

  /** A progress message (stderr, so that stdout holds only results). */
  progress(message: string): void {
    process.stderr.write(`${message}\n`);
  }
}

/** The machine a run happened on, for the record. */
export function machineLine(): string {
  const cpu = cpus();
  const load = loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");
  return `${cpu[0]?.model ?? "unknown CPU"} (${cpu.length} logical CPUs), Node ${process.versions.node}, load average ${load}`;
}

/** How this machine's processes compute the default fast kernel (GRADFLEET_FAST_KERNEL, else the addon where built). */
export function fastKernelLine(): string {
  return fastImplementation() === "native" ? "fast kernel (by the C addon)" : "fast kernel (by WebAssembly)";
}

/** Median of a non-empty list. */
export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** A number with about 3 significant digits and thousands separators. */
export function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const abs = Math.abs(x);
  const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : 2;
  const rounded = abs >= 1000 ? Number(x.toPrecision(3)) : x;
  return rounded.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}
