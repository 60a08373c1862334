/**
 * The PRNG's fast paths draw exactly what the plain generator draws: an
 * epoch's permutation is part of every run's bits.
 */
import { describe, expect, it } from "vitest";
import { epochPermutation, Rng } from "../src/core/prng.js";

/** Fisher–Yates as first written: one nextInt per position, from the end. */
function plainPermutation(n: number, seed: number, epoch: number): Uint32Array {
  const perm = Uint32Array.from({ length: n }, (_, i) => i);
  const rng = new Rng(seed, 0x10000 + epoch);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.nextInt(i + 1);
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  return perm;
}

describe("prng", () => {
  it("an epoch's permutation is the plain Fisher–Yates over nextInt, and the generator goes on from the same state", () => {
    for (const [n, seed, epoch] of [
      [1, 1, 0],
      [2, 9, 3],
      [10, 3, 2],
      [12_345, 99, 3],
      [60_000, 1, 0],
      [60_000, 2 ** 32 - 1, 7],
    ]) {
      const got = epochPermutation(n, seed, epoch);
      expect(Buffer.from(got.buffer).equals(Buffer.from(plainPermutation(n, seed, epoch).buffer))).toBe(true);
      expect([...got].sort((a, b) => a - b)).toEqual([...Array(n).keys()]);
    }
    const a = new Rng(5);
    const b = new Rng(5);
    a.shuffle(new Uint32Array(1000));
    for (let i = 999; i > 0; i--) b.nextInt(i + 1);
    expect(a.nextU32()).toBe(b.nextU32());
  });

  it("nextInt is uniform without modulo bias at the edges of 32 bits, and matches r % n", () => {
    for (const n of [1, 2, 3, 7, 1000, 2 ** 31 - 1, 2 ** 31, 2 ** 31 + 1, 3e9, 2 ** 32]) {
      const a = new Rng(11, n);
      const b = new Rng(11, n);
      const limit = 4294967296 - (4294967296 % n);
      for (let i = 0; i < 5000; i++) {
        let r = b.nextU32();
        while (r >= limit) r = b.nextU32();
        expect(a.nextInt(n)).toBe(r % n);
      }
    }
  });
});
