import { describe, expect, it } from "vitest";
import type { Dataset } from "../src/core/dataset.js";
import { Network } from "../src/core/network.js";
import { Rng } from "../src/core/prng.js";
import { referenceCost, referenceGradient } from "../src/core/reference.js";
import { layoutOf, type ModelSpec } from "../src/core/spec.js";

const combos: ModelSpec[] = [];
for (const hidden of ["sigmoid", "relu"] as const) {
  for (const output of ["sigmoid", "softmax"] as const) {
    for (const cost of ["quadratic", "cross-entropy"] as const) {
      combos.push({ layers: [7, 5, 4, 3], hidden, output, cost });
    }
  }
}

function randomParams(spec: ModelSpec, seed: number): Float64Array {
  const rng = new Rng(seed);
  const p = new Float64Array(layoutOf(spec.layers).size);
  for (let i = 0; i < p.length; i++) p[i] = rng.nextNormal() * 0.8;
  return p;
}

/** A tiny dataset of random bytes, a third of them zero (sparse like MNIST). */
function tinyData(pixels: number, n: number, classes: number, seed: number): Dataset {
  const rng = new Rng(seed, 7);
  const images = new Uint8Array(n * pixels);
  for (let i = 0; i < images.length; i++) images[i] = rng.nextInt(3) === 0 ? 0 : rng.nextInt(256);
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) labels[i] = rng.nextInt(classes);
  return { n, pixels, rows: 1, cols: pixels, images, labels };
}

describe.each(combos)("backprop for $hidden hidden, $output output, $cost cost", (spec) => {
  it("agrees with central finite differences in float64 (relative error ≤ 1e-6)", () => {
    const params = randomParams(spec, 11);
    const rng = new Rng(5);
    for (let ex = 0; ex < 3; ex++) {
      const input = Array.from({ length: spec.layers[0] }, () => rng.nextFloat());
      const label = ex % 3;
      const g = referenceGradient(spec, params, input, label);
      const h = 1e-5;
      const fd = new Float64Array(params.length);
      for (let p = 0; p < params.length; p++) {
        const saved = params[p];
        params[p] = saved + h;
        const up = referenceCost(spec, params, input, label);
        params[p] = saved - h;
        const down = referenceCost(spec, params, input, label);
        params[p] = saved;
        fd[p] = (up - down) / (2 * h);
      }
      let diff = 0;
      let norm = 0;
      for (let p = 0; p < params.length; p++) {
        diff += (g[p] - fd[p]) ** 2;
        norm += g[p] ** 2 + fd[p] ** 2;
        // Every component, relative to its own size with a floor for near-zero ones.
        expect(Math.abs(g[p] - fd[p]) / Math.max(Math.abs(g[p]), Math.abs(fd[p]), 1e-4)).toBeLessThan(1e-6);
      }
      expect(norm).toBeGreaterThan(0);
      expect(Math.sqrt(diff) / Math.sqrt(norm)).toBeLessThan(1e-6);
    }
  });

  it("batched float32 gradient sums match the summed float64 reference within float32 tolerance", () => {
    const p64 = randomParams(spec, 3);
    const params = Float32Array.from(p64);
    const data = tinyData(spec.layers[0], 300, 3, 9);
    // A shard that spans more than one CHUNK of the workspace, in a shuffled order.
    const idx = new Uint32Array(300);
    for (let i = 0; i < 300; i++) idx[i] = (i * 7) % 300;
    const net = new Network(spec);
    const grad = new Float32Array(params.length);
    const totals = net.gradSum(params, data, idx, 10, 290, grad);
    expect(totals.count).toBe(280);
    const want = new Float64Array(params.length);
    let wantCost = 0;
    for (let r = 10; r < 290; r++) {
      const i = idx[r];
      const input = Array.from(data.images.subarray(i * data.pixels, (i + 1) * data.pixels), (v) => v / 255);
      const g = referenceGradient(spec, params, input, data.labels[i]);
      for (let p = 0; p < g.length; p++) want[p] += g[p];
      wantCost += referenceCost(spec, params, input, data.labels[i]);
    }
    const scale = Math.max(...want.map(Math.abs));
    expect(scale).toBeGreaterThan(0);
    for (let p = 0; p < params.length; p++) {
      expect(Math.abs(grad[p] - want[p])).toBeLessThanOrEqual(scale * 1e-6 + Math.abs(want[p]) * 2 ** -23);
    }
    expect(Math.abs(totals.cost - wantCost) / wantCost).toBeLessThan(1e-12);
  });
});

describe("evaluate", () => {
  it("counts the arg-max matches and averages the cost", () => {
    const spec: ModelSpec = {
      layers: [7, 5, 3],
      hidden: "sigmoid",
      output: "softmax",
      cost: "cross-entropy",
    };
    const params = Float32Array.from(randomParams(spec, 1));
    const data = tinyData(7, 50, 3, 2);
    const ev = new Network(spec).evaluate(params, data);
    let correct = 0;
    let cost = 0;
    for (let i = 0; i < 50; i++) {
      const input = Array.from(data.images.subarray(i * 7, i * 7 + 7), (v) => v / 255);
      cost += referenceCost(spec, params, input, data.labels[i]);
      const g = new Network(spec).activations(params, data.images.subarray(i * 7, i * 7 + 7), 1);
      const out = Array.from(g[g.length - 1]);
      if (out.indexOf(Math.max(...out)) === data.labels[i]) correct++;
    }
    expect(ev.correct).toBe(correct);
    expect(ev.accuracy).toBeCloseTo(correct / 50, 12);
    expect(ev.cost).toBeCloseTo(cost / 50, 10);
  });
});
