import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import type { Dataset } from "../src/core/dataset.js";
import { FastKernel } from "../src/core/fast-kernel.js";
import { makeKernel } from "../src/core/kernel.js";
import { CHUNK, Network } from "../src/core/network.js";
import { allocatePixels, pixelHomeOf, WORKSPACE_ROOM } from "../src/core/pixel-memory.js";
import { referenceCost, referenceGradient } from "../src/core/reference.js";
import { layoutOf, type ModelSpec } from "../src/core/spec.js";
import { assembleWat } from "../src/core/wasm/assemble.js";
import { KERNEL_WASM_BASE64 } from "../src/core/wasm/kernel-bytes.js";
import { instantiateKernel } from "../src/core/wasm/module.js";
import { bits, combosOf, randomParams, shuffled, sparseData } from "./helpers/kernel-data.js";

const SHAPES = [
  [7, 5, 3],
  [7, 5, 4, 3],
  [33, 17, 9, 6],
  [784, 13, 10],
  [784, 16, 16, 10],
  // A first layer wide enough for the pixel-sorted dW (csc), and an odd width
  // (dense_dw's last k alone, 16- and 4-output blocks).
  [784, 40, 33, 10],
  // The csc path with pixels left over past the last 16 (100 = 6 x 16 + 4):
  // scan's one-at-a-time tail once read a count's address as the pixel.
  [100, 40, 10],
];
const combos = combosOf(SHAPES);

describe.each(combos)("fast kernel, $layers $hidden/$output/$cost", (spec) => {
  const n = 300;
  const data = sparseData(spec.layers[0], n, spec.layers[spec.layers.length - 1], 9);
  const params = randomParams(spec, 3);
  const idx = shuffled(n);

  it("gradient sums and cost agree with the reference kernel within float32 rounding", () => {
    const want = new Float32Array(params.length);
    const got = new Float32Array(params.length);
    // [10, 290) is longer than one CHUNK: exercises the float64 fold of chunk sums.
    expect(290 - 10).toBeGreaterThan(CHUNK);
    const ref = new Network(spec).gradSum(params, data, idx, 10, 290, want);
    const fast = new FastKernel(spec).gradSum(params, data, idx, 10, 290, got);
    expect(fast.count).toBe(280);
    const scale = Math.max(...want.map(Math.abs));
    expect(scale).toBeGreaterThan(0);
    // Measured worst case ~1e-6 of the largest component (float32 activations and sums).
    for (let p = 0; p < params.length; p++)
      expect(Math.abs(got[p] - want[p])).toBeLessThanOrEqual(4e-6 * scale);
    expect(Math.abs(fast.cost - ref.cost) / ref.cost).toBeLessThan(1e-6);
  });

  it("a one-chunk shard agrees too, and repeated calls give the same bits", () => {
    const kernel = new FastKernel(spec);
    const want = new Float32Array(params.length);
    new Network(spec).gradSum(params, data, idx, 5, 69, want);
    const first = new Float32Array(params.length);
    const again = new Float32Array(params.length);
    const t1 = kernel.gradSum(params, data, idx, 5, 69, first);
    kernel.gradSum(params, data, idx, 100, 300, again); // something else in between
    const t2 = kernel.gradSum(params, data, idx, 5, 69, again);
    expect(bits(again)).toBe(bits(first));
    expect(t2.cost).toBe(t1.cost);
    const scale = Math.max(...want.map(Math.abs));
    for (let p = 0; p < params.length; p++)
      expect(Math.abs(first[p] - want[p])).toBeLessThanOrEqual(4e-6 * scale);
  });

  it("an odd number of rows agrees too (dense_fwd's last row alone)", () => {
    const want = new Float32Array(params.length);
    const got = new Float32Array(params.length);
    new Network(spec).gradSum(params, data, idx, 5, 68, want);
    new FastKernel(spec).gradSum(params, data, idx, 5, 68, got);
    const scale = Math.max(...want.map(Math.abs));
    for (let p = 0; p < params.length; p++)
      expect(Math.abs(got[p] - want[p])).toBeLessThanOrEqual(4e-6 * scale);
  });

  it("evaluate agrees with the reference kernel (accuracy within one example, cost close)", () => {
    const ref = new Network(spec).evaluate(params, data);
    const fast = new FastKernel(spec).evaluate(params, data);
    expect(fast.n).toBe(n);
    expect(Math.abs(fast.correct - ref.correct)).toBeLessThanOrEqual(1);
    expect(fast.accuracy).toBe(fast.correct / n);
    expect(Math.abs(fast.cost - ref.cost) / ref.cost).toBeLessThan(1e-6);
  });
});

describe("fast kernel against the float64 per-example reference", () => {
  it.each([
    { layers: [7, 5, 4, 3], hidden: "sigmoid", output: "sigmoid", cost: "quadratic" },
    { layers: [7, 5, 4, 3], hidden: "relu", output: "softmax", cost: "cross-entropy" },
  ] as ModelSpec[])("$hidden/$output/$cost: summed gradients within float32 tolerance", (spec) => {
    const data = sparseData(7, 40, 3, 4);
    const params = randomParams(spec, 8);
    const idx = shuffled(40);
    const got = new Float32Array(params.length);
    const totals = new FastKernel(spec).gradSum(params, data, idx, 0, 40, got);
    const want = new Float64Array(params.length);
    let wantCost = 0;
    for (let r = 0; r < 40; r++) {
      const i = idx[r];
      const input = Array.from(data.images.subarray(i * 7, i * 7 + 7), (v) => v / 255);
      const g = referenceGradient(spec, params, input, data.labels[i]);
      for (let p = 0; p < g.length; p++) want[p] += g[p];
      wantCost += referenceCost(spec, params, input, data.labels[i]);
    }
    const scale = Math.max(...want.map(Math.abs));
    for (let p = 0; p < params.length; p++)
      expect(Math.abs(got[p] - want[p])).toBeLessThanOrEqual(4e-6 * scale);
    expect(Math.abs(totals.cost - wantCost) / wantCost).toBeLessThan(1e-6);
  });
});

describe("fast kernel determinism and bookkeeping", () => {
  const spec: ModelSpec = {
    layers: [784, 16, 16, 10],
    hidden: "sigmoid",
    output: "sigmoid",
    cost: "quadratic",
  };
  const data = sparseData(784, 600, 10, 21);
  const params = randomParams(spec, 5);
  const idx = shuffled(600);

  it("a fresh instance, and a dataset copied example by example instead of resident, give the same bits", () => {
    const a = new Float32Array(params.length);
    const b = new Float32Array(params.length);
    const c = new Float32Array(params.length);
    const ta = new FastKernel(spec).gradSum(params, data, idx, 3, 550, a);
    const tb = new FastKernel(spec).gradSum(params, data, idx, 3, 550, b);
    const tc = new FastKernel(spec, { maxResidentBytes: 0 }).gradSum(params, data, idx, 3, 550, c);
    expect(bits(b)).toBe(bits(a));
    expect(bits(c)).toBe(bits(a));
    expect(tb.cost).toBe(ta.cost);
    expect(tc.cost).toBe(ta.cost);
  });

  it("switching between datasets uses each one's own pixels", () => {
    const other = sparseData(784, 600, 10, 22);
    const kernel = new FastKernel(spec);
    const onA = new Float32Array(params.length);
    const onB = new Float32Array(params.length);
    const backOnA = new Float32Array(params.length);
    kernel.gradSum(params, data, idx, 0, 64, onA);
    kernel.gradSum(params, other, idx, 0, 64, onB);
    kernel.gradSum(params, data, idx, 0, 64, backOnA);
    const freshB = new Float32Array(params.length);
    new FastKernel(spec).gradSum(params, other, idx, 0, 64, freshB);
    expect(bits(onB)).toBe(bits(freshB));
    expect(bits(onB)).not.toBe(bits(onA));
    expect(bits(backOnA)).toBe(bits(onA));
  });

  it("an empty shard gives a zero gradient and zero cost", () => {
    const grad = new Float32Array(params.length).fill(7);
    expect(new FastKernel(spec).gradSum(params, data, idx, 9, 9, grad)).toEqual({ cost: 0, count: 0 });
    expect(grad.every((v) => v === 0)).toBe(true);
  });

  it("a NaN parameter shows up as NaN in the gradient (never silently dropped)", () => {
    const bad = params.slice();
    bad[layoutOf(spec.layers).layers[1].b] = Number.NaN;
    const grad = new Float32Array(params.length);
    const totals = new FastKernel(spec).gradSum(bad, data, idx, 0, 20, grad);
    expect(Number.isNaN(totals.cost)).toBe(true);
    expect(grad.some((v) => Number.isNaN(v))).toBe(true);
  });

  it("rejects wrong buffer sizes, data shapes and indices with messages that say what is wrong", () => {
    const kernel = new FastKernel(spec);
    const grad = new Float32Array(params.length);
    expect(() => kernel.gradSum(params.subarray(1), data, idx, 0, 5, grad)).toThrow(/parameter buffer has/);
    expect(() => kernel.gradSum(params, data, idx, 0, 5, grad.subarray(1))).toThrow(/gradient buffer has/);
    expect(() => kernel.gradSum(params, sparseData(783, 5, 10, 1), idx, 0, 5, grad)).toThrow(/783 pixels/);
    expect(() => kernel.gradSum(params, data, idx, 5, 700, grad)).toThrow(/shard range/);
    const wild = Uint32Array.of(0, 1, 600);
    expect(() => kernel.gradSum(params, data, wild, 0, 3, grad)).toThrow(
      /example index 600 at shard position 2/,
    );
    expect(() => kernel.evaluate(params.subarray(1), data)).toThrow(/parameter buffer has/);
    const short = { ...data, n: 601 };
    expect(() => kernel.gradSum(params, short, idx, 0, 5, grad)).toThrow(/too few for 601 examples/);
    expect(() => kernel.evaluate(params, short)).toThrow(/too few for 601 examples/);
  });

  it('makeKernel("fast") is this kernel with GRADFLEET_FAST_KERNEL=wasm, and makeKernel("ref") the reference', () => {
    // Without the variable, "fast" is the native addon where it is built (native-kernel.test.ts).
    const before = process.env.GRADFLEET_FAST_KERNEL;
    process.env.GRADFLEET_FAST_KERNEL = "wasm";
    try {
      expect(makeKernel("fast", spec)).toBeInstanceOf(FastKernel);
      expect(makeKernel("ref", spec)).toBeInstanceOf(Network);
    } finally {
      if (before === undefined) delete process.env.GRADFLEET_FAST_KERNEL;
      else process.env.GRADFLEET_FAST_KERNEL = before;
    }
  });
});

describe("fast kernel on pixels in a pixel home (where the loader puts training sets)", () => {
  const spec: ModelSpec = {
    layers: [784, 16, 16, 10],
    hidden: "relu",
    output: "softmax",
    cost: "cross-entropy",
  };
  const other: ModelSpec = { layers: [784, 13, 10], hidden: "sigmoid", output: "sigmoid", cost: "quadratic" };
  const plain = sparseData(784, 600, 10, 31);
  const idx = shuffled(600);

  /** The same dataset with its pixels in a pixel home, as loadDataset makes training sets. */
  function inHome(data: Dataset): Dataset {
    const images = allocatePixels(data.images.length);
    images.set(data.images);
    return { ...data, images };
  }

  /** Gradient bits and cost of shard [from, to) of `data`, from `kernel`. */
  function shard(kernel: FastKernel, s: ModelSpec, data: Dataset, from: number, to: number) {
    const grad = new Float32Array(layoutOf(s.layers).size);
    const { cost } = kernel.gradSum(randomParams(s, 6), data, idx, from, to, grad);
    return { bits: bits(grad), cost };
  }

  it("computes on the pixels in place and gives the bits of a copy", () => {
    const data = inHome(plain);
    const home = pixelHomeOf(data.images);
    expect(home?.pixelsAt).toBe(WORKSPACE_ROOM);
    expect(home?.tenant).toBeUndefined();
    const got = shard(new FastKernel(spec), spec, data, 3, 550);
    // The kernel laid its workspace out in the home's room: it did not copy the pixels.
    expect(home?.tenant).toBeDefined();
    expect(got).toEqual(shard(new FastKernel(spec), spec, plain, 3, 550));
    // A limit's view of the first examples computes in place too.
    const cut = (d: Dataset): Dataset => ({ ...d, n: 300, images: d.images.subarray(0, 300 * 784) });
    const few = idx.filter((i) => i < 300);
    const onCut = (d: Dataset) => {
      const grad = new Float32Array(layoutOf(spec.layers).size);
      new FastKernel(spec).gradSum(randomParams(spec, 6), cut(d), few, 0, few.length, grad);
      return bits(grad);
    };
    expect(onCut(data)).toBe(onCut(plain));
  });

  it("kernels of different shapes taking turns in one home each keep their own bits", () => {
    const data = inHome(plain);
    const a = new FastKernel(spec);
    const b = new FastKernel(other);
    const wantA = shard(new FastKernel(spec), spec, plain, 0, 300);
    const wantB = shard(new FastKernel(other), other, plain, 0, 300);
    const wantEval = new FastKernel(spec).evaluate(randomParams(spec, 6), plain);
    for (let round = 0; round < 2; round++) {
      expect(shard(a, spec, data, 0, 300)).toEqual(wantA);
      expect(shard(b, other, data, 0, 300)).toEqual(wantB);
      expect(a.evaluate(randomParams(spec, 6), data)).toEqual(wantEval);
    }
  });

  it("a kernel moves between homes and plain datasets, each time with the right pixels", () => {
    const kernel = new FastKernel(spec);
    const second = sparseData(784, 600, 10, 32);
    const want = [plain, second].map((d) => shard(new FastKernel(spec), spec, d, 10, 400));
    const homes = [inHome(plain), inHome(second)];
    for (const [d, w] of [
      [homes[0], want[0]],
      [second, want[1]],
      [plain, want[0]],
      [homes[1], want[1]],
      [homes[0], want[0]],
      [plain, want[0]],
    ] as const) {
      expect(shard(kernel, spec, d, 10, 400)).toEqual(w);
    }
  });

  it("a workspace too large for the room copies the pixels instead", () => {
    const big: ModelSpec = {
      layers: [784, 4096, 10],
      hidden: "relu",
      output: "softmax",
      cost: "cross-entropy",
    };
    const data = inHome(plain);
    const got = shard(new FastKernel(big), big, data, 0, 40);
    expect(pixelHomeOf(data.images)?.tenant).toBeUndefined();
    expect(got).toEqual(shard(new FastKernel(big), big, plain, 0, 40));
  });
});

describe("the shipped WebAssembly", () => {
  it("sigmoid is within 2.5 ulp of the float64 sigmoid, 0 deep in the negative tail, and keeps NaN", () => {
    const { exports: wasm, memory } = instantiateKernel(1 << 20);
    const f32 = new Float32Array(memory.buffer);
    const n = 60_000;
    for (let i = 0; i < n; i++) f32[i] = -120 + (220 * i) / n;
    f32.set([Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -0, 0.1234], 0);
    const consts = 8 * n; // the constant table, after input and output
    wasm.sigmoid_consts(consts);
    wasm.sigmoid(4 * n, 0, n, consts);
    const out = f32.subarray(n, 2 * n);
    expect([Number.isNaN(out[0]), out[1], out[2], out[3]]).toEqual([true, 1, 0, 0.5]);
    const ulpAt = (x: number) => {
      const v = new Float32Array([x]);
      new Uint32Array(v.buffer)[0]++;
      return v[0] - Math.fround(x);
    };
    for (let i = 4; i < n; i++) {
      const exact = 1 / (1 + Math.exp(-f32[i]));
      if (exact >= 2 ** -126) expect(Math.abs(out[i] - exact)).toBeLessThanOrEqual(2.5 * ulpAt(exact));
      else expect(Math.abs(out[i] - exact)).toBeLessThan(1e-38);
    }
  });

  it("is exactly the assembly of kernel.wat (reassemble with src/core/wasm/assemble.ts after editing it)", async () => {
    const wat = await readFile(new URL("../src/core/wasm/kernel.wat", import.meta.url), "utf8");
    const bytes = await assembleWat(wat);
    expect(Buffer.from(bytes).toString("base64")).toBe(KERNEL_WASM_BASE64);
  });
});
