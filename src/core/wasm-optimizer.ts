/**
 * The optimizer's update in WebAssembly (kernel.wat: sgd, momentum, adam),
 * fused with the mean gradient: the trainer's serial part of every step,
 * two values an instruction. Bit for bit the same as meanGradient followed
 * by applyUpdate (optimizer.ts, the reference it is tested against): the
 * same float64 operations in the same order, each rounded to nearest.
 *
 * The parameters and the optimizer's moments live in this module's memory
 * for the whole run (adopt() moves them there), so an update copies only
 * the step's gradient sum in.
 */
import { ADAM_BETA2, ADAM_EPS, momentCount, type OptimizerConfig } from "./optimizer.js";
import { instantiateKernel, type KernelExports } from "./wasm/module.js";

/** Parameters, moments and a gradient sum in one WebAssembly memory. */
export class WasmOptimizer {
  private readonly wasm: KernelExports;
  private readonly x: number;
  private readonly st: number;
  private readonly sumAt: number;
  private readonly params: Float32Array;
  private readonly opt: Float32Array;
  private readonly sum: Float32Array;

  constructor(
    private readonly cfg: OptimizerConfig,
    private readonly size: number,
  ) {
    // Regions at 16-byte boundaries; the sum's padding stays zero (finite) for all_finite.
    const padded = Math.ceil(size / 4) * 16;
    const moments = momentCount(cfg.name);
    this.x = 0;
    this.st = padded;
    this.sumAt = padded + Math.ceil((moments * size) / 4) * 16;
    const { exports, memory } = instantiateKernel(this.sumAt + padded);
    this.wasm = exports;
    this.params = new Float32Array(memory.buffer, this.x, size);
    this.opt = new Float32Array(memory.buffer, this.st, moments * size);
    this.sum = new Float32Array(memory.buffer, this.sumAt, size);
  }

  /** Moves a training state's parameters and moments into this memory (their arrays are replaced by views of it). */
  adopt(state: { params: Float32Array; opt: Float32Array }): void {
    if (state.params.length !== this.size || state.opt.length !== this.opt.length) {
      throw new Error("optimizer: buffer sizes do not match the parameters");
    }
    this.params.set(state.params);
    this.opt.set(state.opt);
    state.params = this.params;
    state.opt = this.opt;
  }

  /**
   * One update with the mean gradient `sum / count`, `t` the 1-based update
   * number; returns false, changing nothing, when that mean is not finite.
   */
  update(sum: Float32Array, count: number, t: number): boolean {
    if (sum.length !== this.size) throw new Error("optimizer: buffer sizes do not match the parameters");
    this.sum.set(sum);
    // The mean is finite exactly when the sum is and count > 0 (|sum / count| ≤ |sum|).
    if (!(count > 0) || !this.wasm.all_finite(this.sumAt, Math.ceil(this.size / 4) * 4)) return false;
    const { lr, weightDecay: wd } = this.cfg;
    const n = this.size;
    if (this.cfg.name === "sgd") this.wasm.sgd(this.x, this.sumAt, n, count, lr, wd);
    else if (this.cfg.name === "momentum") {
      this.wasm.momentum(this.x, this.st, this.sumAt, n, count, lr, wd, this.cfg.momentum);
    } else {
      const b1 = this.cfg.momentum;
      this.wasm.adam(
        this.x,
        this.st,
        this.sumAt,
        n,
        count,
        lr,
        wd,
        b1,
        1 - b1,
        ADAM_BETA2,
        1 - ADAM_BETA2,
        1 - b1 ** t,
        1 - ADAM_BETA2 ** t,
        ADAM_EPS,
      );
    }
    return true;
  }
}
