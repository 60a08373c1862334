/**
 * The WebAssembly update (src/core/wasm-optimizer.ts) gives the bits of the
 * JavaScript reference (meanGradient + applyUpdate) for every optimizer,
 * with and without weight decay, odd sizes included, over several steps.
 */
import { describe, expect, it } from "vitest";
import { applyUpdate, initOptimizerState, OPTIMIZERS, type OptimizerConfig } from "../src/core/optimizer.js";
import { Rng } from "../src/core/prng.js";
import { meanGradient } from "../src/core/trainer.js";
import { WasmOptimizer } from "../src/core/wasm-optimizer.js";

/** Finite values over many magnitudes, with zeros, signed zeros and subnormals. */
function values(n: number, seed: number, scale: number): Float32Array {
  const rng = new Rng(seed);
  const specials = [0, -0, 1e-45, -1e-45, 1.17e-38, 1, -1, 0.1];
  return Float32Array.from({ length: n }, () =>
    rng.nextInt(5) === 0
      ? specials[rng.nextInt(specials.length)]
      : (rng.nextFloat() - 0.5) * scale * 10 ** (rng.nextInt(12) - 6),
  );
}

const same = (a: Float32Array, b: Float32Array) =>
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe("WasmOptimizer", () => {
  for (const name of OPTIMIZERS) {
    for (const weightDecay of [0, 1e-4]) {
      it(`${name}, weight decay ${weightDecay}: the bits of meanGradient + applyUpdate`, () => {
        const cfg: OptimizerConfig = { name, lr: name === "adam" ? 0.001 : 0.37, momentum: 0.9, weightDecay };
        for (const size of [1, 2, 3, 5, 13, 1001]) {
          const ref = { params: values(size, size, 1), opt: initOptimizerState(name, size) };
          const fast = { params: Float32Array.from(ref.params), opt: Float32Array.from(ref.opt) };
          const opt = new WasmOptimizer(cfg, size);
          opt.adopt(fast);
          const mean = new Float64Array(size);
          for (let t = 1; t <= 6; t++) {
            const sum = values(size, 100 * size + t, 1e3);
            const count = [1, 7, 1024][t % 3];
            expect(meanGradient(sum, count, mean)).toBe(true);
            applyUpdate(cfg, ref.params, ref.opt, mean, t);
            expect(opt.update(sum, count, t)).toBe(true);
            expect(same(fast.params, ref.params)).toBe(true);
            expect(same(fast.opt, ref.opt)).toBe(true);
          }
        }
      });
    }
  }

  it("refuses a non-finite mean (NaN, infinity, no examples) and changes nothing", () => {
    const cfg: OptimizerConfig = { name: "adam", lr: 0.01, momentum: 0.9, weightDecay: 0 };
    const state = { params: values(9, 1, 1), opt: initOptimizerState("adam", 9) };
    const opt = new WasmOptimizer(cfg, 9);
    opt.adopt(state);
    const before = Float32Array.from(state.params);
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      const sum = values(9, 2, 1);
      sum[8] = bad;
      expect(opt.update(sum, 10, 1)).toBe(false);
    }
    expect(opt.update(values(9, 3, 1), 0, 1)).toBe(false);
    expect(same(state.params, before)).toBe(true);
    expect(state.opt.every((v) => v === 0)).toBe(true);
    expect(() => opt.update(new Float32Array(8), 1, 1)).toThrow(/sizes do not match/);
  });
});
