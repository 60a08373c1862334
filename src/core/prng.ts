/**
 * The one PRNG of gradfleet: xoshiro128** (Blackman & Vigna), 32-bit state
 * words, seeded through SplitMix32 so that nearby seeds give unrelated
 * streams. Integer-only arithmetic (Math.imul, >>> 0), so the same seed gives
 * the same numbers on every platform and Node version.
 */

/** SplitMix32 step: turns any 32-bit value into a well-mixed one. */
function splitmix32(x: number): number {
  x = (x + 0x9e3779b9) >>> 0;
  let z = x;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

/** A seeded xoshiro128** generator. */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /**
   * @param seed any 32-bit unsigned integer
   * @param stream a second number (e.g. an epoch) that selects an independent stream
   */
  constructor(seed: number, stream = 0) {
    let x = splitmix32((seed >>> 0) ^ Math.imul(stream >>> 0, 0x6c8e9cf5));
    x = splitmix32(x ^ (stream >>> 0));
    this.s0 = x = splitmix32(x);
    this.s1 = x = splitmix32(x);
    this.s2 = x = splitmix32(x);
    this.s3 = splitmix32(x);
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Next uniform 32-bit unsigned integer. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in [0, 1) with 32 bits of resolution. */
  nextFloat(): number {
    return this.nextU32() / 4294967296;
  }

  /** Uniform integer in [0, n), without modulo bias (n ≤ 2^32). */
  nextInt(n: number): number {
    // x mod n as x - n·floor(x / n): the same value as `%` (the quotient of
    // two integers below 2^33 is never rounded across an integer), without
    // the floating-point remainder V8 does by a slow call. An epoch's
    // permutation takes one per example.
    const limit = n * Math.floor(4294967296 / n);
    for (;;) {
      const r = this.nextU32();
      if (r < limit) return r - n * Math.floor(r / n);
    }
  }

  /**
   * Shuffles `a` in place (Fisher–Yates from the end, j = nextInt(i + 1)):
   * exactly the numbers nextInt would draw, in int32 locals so that V8 keeps
   * them in registers (an epoch's permutation is 60,000 draws, on every
   * worker).
   */
  shuffle(a: Uint32Array): void {
    let s0 = this.s0 | 0;
    let s1 = this.s1 | 0;
    let s2 = this.s2 | 0;
    let s3 = this.s3 | 0;
    for (let i = a.length - 1; i > 0; i--) {
      const n = i + 1;
      // nextInt's limit, n·floor(2^32 / n), is above 2^32 - n: every r below
      // that is accepted without the division that makes the limit (the
      // same draws; the division is half the loop's time).
      const sure = 4294967296 - n;
      let j = -1;
      while (j < 0) {
        const x = Math.imul(s1, 5);
        const r = Math.imul((x << 7) | (x >>> 25), 9) >>> 0;
        const t = s1 << 9;
        s2 ^= s0;
        s3 ^= s1;
        s1 ^= s2;
        s0 ^= s3;
        s2 ^= t;
        s3 = (s3 << 11) | (s3 >>> 21);
        if (r < sure || r < n * Math.floor(4294967296 / n)) j = r - n * Math.floor(r / n);
      }
      const tmp = a[i];
      a[i] = a[j];
      a[j] = tmp;
    }
    this.s0 = s0 >>> 0;
    this.s1 = s1 >>> 0;
    this.s2 = s2 >>> 0;
    this.s3 = s3 >>> 0;
  }

  /** Standard normal deviate (Box–Muller; one of the pair is discarded for simplicity). */
  nextNormal(): number {
    // 1 - u keeps the log argument in (0, 1].
    const u = 1 - this.nextFloat();
    const v = this.nextFloat();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/**
 * The seeded permutation of `[0, n)` that orders an epoch (Fisher–Yates).
 * Epoch e of seed s always gives the same order, on any process.
 */
export function epochPermutation(n: number, seed: number, epoch: number): Uint32Array {
  const perm = new Uint32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  new Rng(seed, 0x10000 + epoch).shuffle(perm);
  return perm;
}
