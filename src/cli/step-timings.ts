/**
 * Collects every step's phase times so the summary can report their median
 * and 95th percentile (compute / communication / update / total).
 */
import type { StepTiming } from "../core/trainer.js";

const PHASES = ["compute", "communication", "update", "total"] as const;

/** Median and p95 of a phase, in milliseconds. */
export interface PhaseStats {
  p50: number;
  p95: number;
}

/** Step-time recorder; grows geometrically, no per-step allocation. */
export class StepTimings {
  private data = new Float64Array(4 * 1024);
  private n = 0;

  add(t: StepTiming): void {
    if ((this.n + 1) * 4 > this.data.length) {
      const bigger = new Float64Array(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    const o = this.n * 4;
    this.data[o] = t.compute;
    this.data[o + 1] = t.communication;
    this.data[o + 2] = t.update;
    this.data[o + 3] = t.total;
    this.n++;
  }

  /** Per phase, median and p95 in ms (empty object when no step ran). */
  summary(): Record<string, PhaseStats> {
    if (this.n === 0) return {};
    const out: Record<string, PhaseStats> = {};
    PHASES.forEach((name, k) => {
      const v = new Float64Array(this.n);
      for (let i = 0; i < this.n; i++) v[i] = this.data[i * 4 + k];
      v.sort();
      const q = (p: number) => v[Math.min(this.n - 1, Math.floor(p * this.n))] * 1000;
      out[name] = { p50: q(0.5), p95: q(0.95) };
    });
    return out;
  }
}
