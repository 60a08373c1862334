/**
 * Collects every step's phase times so the summary can report their median,
 * 95th percentile and mean (compute / communication / update / total, and
 * overhead: the step's total minus its compute, the cost of coordination).
 */
import type { StepTiming } from "../core/trainer.js";

const PHASES = ["compute", "communication", "update", "total"] as const;

/** Median, p95 and mean of a phase, in milliseconds. */
export interface PhaseStats {
  p50: number;
  p95: number;
  mean: number;
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
    const stats = (pick: (i: number) => number): PhaseStats => {
      const v = new Float64Array(this.n);
      let sum = 0;
      for (let i = 0; i < this.n; i++) {
        v[i] = pick(i);
        sum += v[i];
      }
      v.sort();
      const q = (p: number) => v[Math.min(this.n - 1, Math.floor(p * this.n))] * 1000;
      return { p50: q(0.5), p95: q(0.95), mean: (sum / this.n) * 1000 };
    };
    PHASES.forEach((name, k) => {
      out[name] = stats((i) => this.data[i * 4 + k]);
    });
    out.overhead = stats((i) => this.data[i * 4 + 3] - this.data[i * 4]);
    return out;
  }
}
