import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { FastKernel } from "../src/core/fast-kernel.js";
import { fastImplementation, makeKernel } from "../src/core/kernel.js";
import { NativeKernel, nativeKernelUnavailable } from "../src/core/native-kernel.js";
import { CHUNK, Network } from "../src/core/network.js";
import { referenceCost, referenceGradient } from "../src/core/reference.js";
import { layoutOf, type ModelSpec } from "../src/core/spec.js";
import { bits, combosOf, randomParams, shuffled, sparseData } from "./helpers/kernel-data.js";

/** |got - want| within `tol` of want's largest component, everywhere. */
function expectClose(got: Float32Array, want: ArrayLike<number>, tol = 4e-6): void {
  let scale = 0;
  for (let p = 0; p < want.length; p++) scale = Math.max(scale, Math.abs(want[p]));
  expect(scale).toBeGreaterThan(0);
  let worst = 0;
  for (let p = 0; p < want.length; p++) worst = Math.max(worst, Math.abs(got[p] - want[p]));
  expect(worst).toBeLessThanOrEqual(tol * scale);
}

const SHAPES = [
  [7, 5, 3],
  [7, 5, 4, 3],
  [33, 17, 9, 6],
  [784, 13, 10],
  [784, 16, 16, 10],
  // Widths past one register tile (8 vectors of 16) and odd widths (padding).
  [784, 150, 33, 10],
  [100, 40, 10],
  [5, 3],
];
const combos = combosOf(SHAPES);

function hasCompiler(): boolean {
  return ["cc", "gcc", "clang"].some((cc) => spawnSync(cc, ["--version"], { stdio: "ignore" }).status === 0);
}

describe("native kernel availability", () => {
  it("is built wherever a C compiler exists (so these tests cannot pass by skipping)", () => {
    if (hasCompiler()) expect(nativeKernelUnavailable()).toBeUndefined();
    else expect(nativeKernelUnavailable()).toMatch(/not built/);
  });

  // Runs only where the addon is missing; where it is built, native-cluster.test.ts
  // checks the same message with GRADFLEET_NATIVE_ADDON naming no file.
  it.skipIf(!nativeKernelUnavailable())(
    "GRADFLEET_FAST_KERNEL=native says why it is not available here",
    () => {
      expect(() => fastImplementation({ GRADFLEET_FAST_KERNEL: "native" })).toThrow(
        /GRADFLEET_FAST_KERNEL=native: the native kernel is not available here: /,
      );
      expect(fastImplementation({})).toBe("wasm");
    },
  );

  it("GRADFLEET_FAST_KERNEL names its value when it is not one it knows", () => {
    expect(() => fastImplementation({ GRADFLEET_FAST_KERNEL: "gpu" })).toThrow(
      'GRADFLEET_FAST_KERNEL: "gpu" is not one of auto, native, wasm',
    );
    expect(fastImplementation({ GRADFLEET_FAST_KERNEL: "wasm" })).toBe("wasm");
  });
});

// Skipped only where the addon is not built (no C compiler): the availability
// test above fails where a compiler exists but the addon is missing, so CI
// cannot pass by skipping these.
describe.skipIf(nativeKernelUnavailable())("native kernel", () => {
  describe.each(combos)("$layers $hidden/$output/$cost", (spec) => {
    const n = 300;
    const data = sparseData(spec.layers[0], n, spec.layers[spec.layers.length - 1], 9);
    const params = randomParams(spec, 3);
    const idx = shuffled(n);

    it("gives the WebAssembly kernel's bits: gradient sums, costs and evaluations", () => {
      const fast = new FastKernel(spec);
      const native = new NativeKernel(spec);
      // Shorter than a block, not starting at 0, longer than one float64 fold
      // group (CHUNK examples), and the whole set.
      for (const [from, to] of [
        [0, 7],
        [3, 64],
        [10, 290],
        [0, n],
      ]) {
        const want = new Float32Array(params.length);
        const got = new Float32Array(params.length);
        const w = fast.gradSum(params, data, idx, from, to, want);
        const g = native.gradSum(params, data, idx, from, to, got);
        expect(bits(got), `[${from}, ${to})`).toBe(bits(want));
        expect(g).toEqual(w);
      }
      expect(native.evaluate(params, data)).toEqual(fast.evaluate(params, data));
    });

    it("gradient sums and cost agree with the reference kernel within float32 rounding", () => {
      const want = new Float32Array(params.length);
      const got = new Float32Array(params.length);
      // [10, 290) is longer than one float64 fold group (4 blocks of 64).
      expect(290 - 10).toBeGreaterThan(CHUNK);
      const ref = new Network(spec).gradSum(params, data, idx, 10, 290, want);
      const native = new NativeKernel(spec).gradSum(params, data, idx, 10, 290, got);
      expect(native.count).toBe(280);
      expectClose(got, want);
      expect(Math.abs(native.cost - ref.cost) / ref.cost).toBeLessThan(1e-6);
    });

    it("a short shard agrees too, and repeated calls give the same bits", () => {
      const kernel = new NativeKernel(spec);
      const want = new Float32Array(params.length);
      new Network(spec).gradSum(params, data, idx, 5, 68, want);
      const first = new Float32Array(params.length);
      const again = new Float32Array(params.length);
      const t1 = kernel.gradSum(params, data, idx, 5, 68, first);
      kernel.gradSum(params, data, idx, 100, 300, again); // something else in between
      const t2 = kernel.gradSum(params, data, idx, 5, 68, again);
      expect(bits(again)).toBe(bits(first));
      expect(t2.cost).toBe(t1.cost);
      expectClose(first, want);
    });

    it("evaluate agrees with the reference kernel (accuracy within one example, cost close)", () => {
      const ref = new Network(spec).evaluate(params, data);
      const native = new NativeKernel(spec).evaluate(params, data);
      expect(native.n).toBe(n);
      expect(Math.abs(native.correct - ref.correct)).toBeLessThanOrEqual(1);
      expect(native.accuracy).toBe(native.correct / n);
      expect(Math.abs(native.cost - ref.cost) / ref.cost).toBeLessThan(1e-6);
    });
  });

  describe("against the float64 per-example reference", () => {
    it.each([
      { layers: [7, 5, 4, 3], hidden: "sigmoid", output: "sigmoid", cost: "quadratic" },
      { layers: [7, 5, 4, 3], hidden: "relu", output: "softmax", cost: "cross-entropy" },
      { layers: [7, 5, 4, 3], hidden: "sigmoid", output: "sigmoid", cost: "cross-entropy" },
      { layers: [7, 5, 4, 3], hidden: "relu", output: "softmax", cost: "quadratic" },
    ] as ModelSpec[])("$hidden/$output/$cost: summed gradients within float32 tolerance", (spec) => {
      const data = sparseData(7, 40, 3, 4);
      const params = randomParams(spec, 8);
      const idx = shuffled(40);
      const got = new Float32Array(params.length);
      const totals = new NativeKernel(spec).gradSum(params, data, idx, 0, 40, got);
      const want = new Float64Array(params.length);
      let wantCost = 0;
      for (let r = 0; r < 40; r++) {
        const i = idx[r];
        const input = Array.from(data.images.subarray(i * 7, i * 7 + 7), (v) => v / 255);
        const g = referenceGradient(spec, params, input, data.labels[i]);
        for (let p = 0; p < g.length; p++) want[p] += g[p];
        wantCost += referenceCost(spec, params, input, data.labels[i]);
      }
      expectClose(got, want);
      expect(Math.abs(totals.cost - wantCost) / wantCost).toBeLessThan(1e-6);
    });
  });

  describe("determinism and bookkeeping", () => {
    const spec: ModelSpec = {
      layers: [784, 16, 16, 10],
      hidden: "sigmoid",
      output: "sigmoid",
      cost: "quadratic",
    };
    const data = sparseData(784, 600, 10, 21);
    const params = randomParams(spec, 5);
    const idx = shuffled(600);

    it("a fresh instance, a copy of the dataset and a gradient inside a bigger buffer give the same bits", () => {
      const a = new Float32Array(params.length);
      const ta = new NativeKernel(spec).gradSum(params, data, idx, 3, 550, a);
      const copy = { ...data, images: data.images.slice(), labels: data.labels.slice() };
      const inBig = new Float32Array(params.length + 8);
      const b = inBig.subarray(4, 4 + params.length);
      // Parameters as a view into a Node Buffer, as they arrive from the network.
      const buf = Buffer.alloc(params.byteLength + 12);
      const p2 = new Float32Array(buf.buffer, buf.byteOffset + 12 - (buf.byteOffset % 4), params.length);
      p2.set(params);
      const tb = new NativeKernel(spec).gradSum(p2, copy, idx, 3, 550, b);
      expect(bits(b)).toBe(bits(a));
      expect(tb.cost).toBe(ta.cost);
      expect(inBig[3]).toBe(0);
      expect(inBig[4 + params.length]).toBe(0);
    });

    it("switching between datasets uses each one's own pixels", () => {
      const other = sparseData(784, 600, 10, 22);
      const kernel = new NativeKernel(spec);
      const onA = new Float32Array(params.length);
      const onB = new Float32Array(params.length);
      const backOnA = new Float32Array(params.length);
      kernel.gradSum(params, data, idx, 0, 64, onA);
      kernel.gradSum(params, other, idx, 0, 64, onB);
      kernel.gradSum(params, data, idx, 0, 64, backOnA);
      const freshB = new Float32Array(params.length);
      new NativeKernel(spec).gradSum(params, other, idx, 0, 64, freshB);
      expect(bits(onB)).toBe(bits(freshB));
      expect(bits(onB)).not.toBe(bits(onA));
      expect(bits(backOnA)).toBe(bits(onA));
    });

    it("an empty shard gives a zero gradient and zero cost", () => {
      const grad = new Float32Array(params.length).fill(7);
      expect(new NativeKernel(spec).gradSum(params, data, idx, 9, 9, grad)).toEqual({ cost: 0, count: 0 });
      expect(grad.every((v) => v === 0)).toBe(true);
    });

    it("diverging parameters (infinite deltas) give the WebAssembly kernel's bits, NaNs and infinities alike", () => {
      for (const scale of [1e6, 1e30, 1e38]) {
        const huge = params.map((v) => v * scale);
        const want = new Float32Array(params.length);
        const got = new Float32Array(params.length);
        const w = new FastKernel(spec).gradSum(huge, data, idx, 0, 300, want);
        const g = new NativeKernel(spec).gradSum(huge, data, idx, 0, 300, got);
        expect(bits(got), `scale ${scale}`).toBe(bits(want));
        expect(Object.is(g.cost, w.cost)).toBe(true);
      }
    });

    it("a NaN parameter shows up as NaN in the gradient (never silently dropped)", () => {
      const bad = params.slice();
      bad[layoutOf(spec.layers).layers[1].b] = Number.NaN;
      const grad = new Float32Array(params.length);
      const totals = new NativeKernel(spec).gradSum(bad, data, idx, 0, 20, grad);
      expect(Number.isNaN(totals.cost)).toBe(true);
      expect(grad.some((v) => Number.isNaN(v))).toBe(true);
    });

    it("rejects wrong buffer sizes, data shapes and indices with messages that say what is wrong", () => {
      const kernel = new NativeKernel(spec);
      const grad = new Float32Array(params.length);
      expect(() => kernel.gradSum(params.subarray(1), data, idx, 0, 5, grad)).toThrow(/parameter buffer has/);
      expect(() => kernel.gradSum(params, data, idx, 0, 5, grad.subarray(1))).toThrow(/gradient buffer has/);
      expect(() => kernel.gradSum(params, sparseData(783, 5, 10, 1), idx, 0, 5, grad)).toThrow(/783 pixels/);
      expect(() => kernel.gradSum(params, data, idx, 5, 700, grad)).toThrow(/shard range/);
      expect(() => kernel.gradSum(params, data, idx, 5, 4, grad)).toThrow(/shard range/);
      const wild = Uint32Array.of(0, 1, 600);
      expect(() => kernel.gradSum(params, data, wild, 0, 3, grad)).toThrow(
        /example index 600 at shard position 2 is outside the dataset's 600 examples/,
      );
      expect(() => kernel.evaluate(params.subarray(1), data)).toThrow(/parameter buffer has/);
      const short = { ...data, n: 601 };
      expect(() => kernel.gradSum(params, short, idx, 0, 5, grad)).toThrow(/too few for 601 examples/);
      expect(() => kernel.evaluate(params, short)).toThrow(/too few for 601 examples/);
    });

    it("a deep network (70 layer sizes) agrees with the reference kernel", () => {
      const deep: ModelSpec = {
        layers: [20, ...Array(68).fill(6), 4],
        hidden: "relu",
        output: "softmax",
        cost: "cross-entropy",
      };
      const d = sparseData(20, 100, 4, 3);
      const p = randomParams(deep, 2).map((v) => v * 2);
      const want = new Float32Array(p.length);
      const got = new Float32Array(p.length);
      new Network(deep).gradSum(p, d, shuffled(100), 0, 100, want);
      new NativeKernel(deep).gradSum(p, d, shuffled(100), 0, 100, got);
      expectClose(got, want, 1e-5);
    });

    it('makeKernel("fast") is this kernel where it is built, unless GRADFLEET_FAST_KERNEL=wasm', () => {
      const before = process.env.GRADFLEET_FAST_KERNEL;
      try {
        delete process.env.GRADFLEET_FAST_KERNEL;
        expect(makeKernel("fast", spec)).toBeInstanceOf(NativeKernel);
        process.env.GRADFLEET_FAST_KERNEL = "wasm";
        expect(makeKernel("fast", spec)).toBeInstanceOf(FastKernel);
        process.env.GRADFLEET_FAST_KERNEL = "native";
        expect(makeKernel("fast", spec)).toBeInstanceOf(NativeKernel);
      } finally {
        if (before === undefined) delete process.env.GRADFLEET_FAST_KERNEL;
        else process.env.GRADFLEET_FAST_KERNEL = before;
      }
    });
  });
});

// Skipped, like the tests above, only where the addon is not built.
describe.skipIf(nativeKernelUnavailable())("the addon's own checks (below NativeKernel's)", () => {
  it("refuses a handle of the wrong kind, buffers of the wrong size and calls out of order, naming them", () => {
    const file = fileURLToPath(new URL("../dist/native/gradfleet-kernel.node", import.meta.url));
    const addon = createRequire(import.meta.url)(file);
    const f = (n: number) => new Float32Array(n);
    const outRows = 3 * addon.blockRows * addon.vectorWidth + addon.vectorWidth; // 2 outputs: one vector a row
    expect(() => addon.createNet(Int32Array.from([4, 3, 2]), 0, 0, 0, f(outRows - 1))).toThrow(
      `createNet: output rows of ${outRows - 1} floats, need ${outRows}`,
    );
    const [net, shift] = addon.createNet(Int32Array.from([4, 3, 2]), 0, 0, 0, f(outRows));
    expect(shift).toBeLessThan(addon.vectorWidth);
    const data = addon.createData(new Uint8Array(8).fill(9), 2, 4);
    const P = layoutOf([4, 3, 2]).size;
    const idx = Uint32Array.from([0, 1]);
    expect(() => addon.begin(data, data, f(P), idx, 0, 2)).toThrow(/expected a network handle/);
    expect(() => addon.begin(net, net, f(P), idx, 0, 2)).toThrow(/expected a dataset handle/);
    expect(() => addon.begin(net, data, f(P - 1), idx, 0, 2)).toThrow(
      `begin: ${P - 1} parameters, the model has ${P}`,
    );
    expect(() => addon.begin(net, data, f(P), Uint32Array.of(0, 2), 0, 2)).toThrow(
      "example index 2 at shard position 1 is outside the dataset's 2 examples",
    );
    expect(() => addon.begin(net, data, f(P), idx, 0, 3)).toThrow("range [0, 3) is not inside the 2 indices");
    expect(() => addon.forward(net)).toThrow("forward: no computation begun");
    // The right sizes compute, in order: begin, forward, backward, finish.
    addon.begin(net, data, f(P), idx, 0, 2);
    expect(() => addon.backward(net)).toThrow(/no gradient sum's block forwarded/);
    expect(() => addon.runQuadratic(net, new Uint8Array(1))).toThrow("runQuadratic: 1 labels for 2 examples");
    expect(() => addon.finish(net, f(P))).toThrow(/not through all its blocks/);
    expect(addon.forward(net)).toBe(2);
    addon.backward(net);
    expect(addon.forward(net)).toBe(0);
    expect(() => addon.finish(net, f(P + 4))).toThrow(
      `finish: a gradient of ${P + 4} values, the model has ${P}`,
    );
    addon.finish(net, f(P));
    const [softmaxNet] = addon.createNet(Int32Array.from([4, 3, 2]), 0, 1, 0, f(outRows));
    addon.begin(softmaxNet, data, f(P), idx, 0, 2);
    expect(() => addon.runQuadratic(softmaxNet, new Uint8Array(2))).toThrow(
      /not sigmoid with the quadratic cost/,
    );
  });
});
