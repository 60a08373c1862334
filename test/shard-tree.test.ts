/**
 * The step's shard tree (src/core/shard-tree.ts): how a range of shards is
 * tiled by tree nodes, and that adding the nodes a worker sends gives the
 * same bits as adding every shard up the tree, for every way of cutting a
 * step into ranges.
 */
import { describe, expect, it } from "vitest";
import { F32Heap } from "../src/core/f32-heap.js";
import { Rng } from "../src/core/prng.js";
import { blocksOf, type GradBlock, rootSize, ShardTree } from "../src/core/shard-tree.js";
import { meanGradient } from "../src/core/trainer.js";

/** Values that stress rounding: ±0, subnormals, huge, mixed magnitudes that cancel. */
function nasty(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const specials = [0, -0, 1e-45, -1e-45, 1.17e-38, 3.4e38, -3.4e38, 1, -1, 0.1, 1e-40];
  const g = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    g[i] =
      rng.nextInt(3) === 0
        ? specials[rng.nextInt(specials.length)]
        : (rng.nextFloat() - 0.5) * 10 ** (rng.nextInt(30) - 15);
  }
  return g;
}

/**
 * The tree as its definition reads, written independently: node [s, s + size)
 * is its left half when the right half starts at or past k, else the float32
 * sum (Math.fround) of its halves.
 */
function definition(leaves: Float32Array[], s: number, size: number, p: number): number {
  if (size === 1) return leaves[s][p];
  const half = size / 2;
  const left = definition(leaves, s, half, p);
  if (s + half >= leaves.length) return left;
  return Math.fround(left + definition(leaves, s + half, half, p));
}

function leafBlocks(leaves: Float32Array[], lo: number, hi: number): GradBlock[] {
  return leaves
    .slice(lo, hi)
    .map((grad, i) => ({ lo: lo + i, hi: lo + i + 1, grad, cost: lo + i, count: 10 }));
}

/** Every way to cut [0, k) into contiguous ranges, as their inner boundaries (k ≤ 9 keeps it small). */
function* cuts(k: number): Generator<number[]> {
  for (let mask = 0; mask < 1 << (k - 1); mask++) {
    const bounds = [0];
    for (let i = 1; i < k; i++) if (mask & (1 << (i - 1))) bounds.push(i);
    bounds.push(k);
    yield bounds;
  }
}

describe("blocksOf", () => {
  it("tiles any range with aligned nodes, the largest that fit, clipped at k", () => {
    expect(blocksOf(0, 8, 8)).toEqual([[0, 8]]);
    expect(blocksOf(0, 6, 6)).toEqual([[0, 6]]);
    expect(blocksOf(4, 6, 6)).toEqual([[4, 6]]);
    expect(blocksOf(0, 3, 8)).toEqual([
      [0, 2],
      [2, 3],
    ]);
    expect(blocksOf(3, 6, 8)).toEqual([
      [3, 4],
      [4, 6],
    ]);
    expect(blocksOf(5, 13, 13)).toEqual([
      [5, 6],
      [6, 8],
      [8, 13],
    ]);
    for (let k = 1; k <= 40; k++)
      for (let lo = 0; lo < k; lo++)
        for (let hi = lo + 1; hi <= k; hi++) {
          const b = blocksOf(lo, hi, k);
          expect(b[0][0]).toBe(lo);
          expect(b[b.length - 1][1]).toBe(hi);
          for (let i = 1; i < b.length; i++) expect(b[i][0]).toBe(b[i - 1][1]);
          for (const [s, e] of b) {
            const size = rootSize(e - s);
            expect(s % size).toBe(0); // aligned: a node of the tree
            expect(e === s + size || e === k).toBe(true);
          }
          expect(b.length).toBeLessThanOrEqual(2 * Math.log2(rootSize(k)) + 1);
        }
    expect(() => blocksOf(2, 2, 4)).toThrow(/shard range \[2, 2\)/);
    expect(() => blocksOf(0, 5, 4)).toThrow(/not inside a step of 4 shards/);
  });
});

describe("ShardTree", () => {
  it("adds shards up the tree exactly as the definition does", () => {
    const P = 301;
    for (let k = 1; k <= 17; k++) {
      const leaves = Array.from({ length: k }, (_, i) => nasty(P, 1000 * k + i));
      const got = new ShardTree(P).sum(leafBlocks(leaves, 0, k), 0, k, k, new Float32Array(P));
      for (let p = 0; p < P; p++)
        expect(Object.is(got.grad[p], definition(leaves, 0, rootSize(k), p))).toBe(true);
      expect(got.count).toBe(10 * k);
    }
  });

  it("gives the same bits, cost and count for every way of cutting a step into workers' ranges", () => {
    const P = 97;
    for (let k = 1; k <= 9; k++) {
      const leaves = Array.from({ length: k }, (_, i) => nasty(P, 77 * k + i));
      const tree = new ShardTree(P);
      const want = tree.sum(leafBlocks(leaves, 0, k), 0, k, k, new Float32Array(P));
      const wantGrad = Float32Array.from(want.grad);
      for (const bounds of cuts(k)) {
        // Each worker adds the nodes of its range; the coordinator adds those.
        const sent: GradBlock[] = [];
        for (let w = 0; w + 1 < bounds.length; w++) {
          for (const [lo, hi] of blocksOf(bounds[w], bounds[w + 1], k)) {
            const node = new ShardTree(P).sum(leafBlocks(leaves, lo, hi), lo, hi, k, new Float32Array(P));
            sent.push({ ...node, grad: Float32Array.from(node.grad) });
          }
        }
        const got = tree.sum(sent, 0, k, k, new Float32Array(P));
        expect(Buffer.from(got.grad.buffer).equals(Buffer.from(wantGrad.buffer))).toBe(true);
        expect(Object.is(got.cost, want.cost)).toBe(true);
        expect(got.count).toBe(want.count);
      }
    }
  });

  it("in a heap (the kernel's SIMD additions) gives the bits of the JavaScript additions", () => {
    for (const P of [1, 3, 4, 97, 13_002]) {
      for (const k of [2, 3, 5, 8, 13]) {
        const plain = Array.from({ length: k }, (_, i) => nasty(P, 31 * k + i + P));
        const heap = new F32Heap(P, k + ShardTree.scratchBuffers(k) + 1);
        const held = plain.map((g) => {
          const h = heap.alloc();
          h.set(g);
          return h;
        });
        const want = new ShardTree(P).sum(leafBlocks(plain, 0, k), 0, k, k, new Float32Array(P));
        const got = new ShardTree(P, heap).sum(leafBlocks(held, 0, k), 0, k, k, heap.alloc());
        expect(heap.holds(got.grad)).toBe(true);
        for (let p = 0; p < P; p++) {
          // NaN payloads may differ between engines' additions; any NaN is refused anyway.
          if (Number.isNaN(want.grad[p])) expect(got.grad[p]).toBeNaN();
          else expect(Object.is(got.grad[p], want.grad[p])).toBe(true);
        }
      }
    }
    const heap = new F32Heap(4, 1);
    heap.alloc();
    expect(() => heap.alloc()).toThrow(/all in use/);
  });

  it("refuses blocks that do not tile the range", () => {
    const P = 3;
    const g = () => new Float32Array(P);
    const tree = new ShardTree(P);
    const b = (lo: number, hi: number) => ({ lo, hi, grad: g(), cost: 0, count: 1 });
    expect(() => tree.sum([b(0, 1), b(2, 3)], 0, 3, 3, g())).toThrow(/do not tile/);
    expect(() => tree.sum([b(0, 1)], 0, 2, 2, g())).toThrow(/end at shard 1, not 2/);
    expect(() => tree.sum([{ ...b(0, 1), grad: new Float32Array(4) }], 0, 1, 1, g())).toThrow(/do not tile/);
  });
});

describe("meanGradient", () => {
  it("divides the tree's sum by the count in float64 and reports any NaN or infinite value", () => {
    const sum = nasty(500, 3);
    const out = new Float64Array(500);
    expect(meanGradient(sum, 1000, out)).toBe(true);
    for (let p = 0; p < 500; p++) expect(Object.is(out[p], sum[p] / 1000)).toBe(true);
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      const s = nasty(50, 5);
      s[17] = bad;
      expect(meanGradient(s, 10, new Float64Array(50))).toBe(false);
    }
    expect(meanGradient(new Float32Array(5), 0, new Float64Array(5))).toBe(false);
  });
});
