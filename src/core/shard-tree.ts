/**
 * The step's shard tree: the one order in which a step's shard gradients
 * are added, wherever they were computed.
 *
 * A step has K shards (its non-empty ones, in plan order). Their float32
 * gradients are the leaves of a fixed binary tree: the nodes are the aligned
 * intervals [a·2^j, (a+1)·2^j) clipped to [0, K), and a node's value is the
 * float32 sum of its two children's values (a node whose right child lies
 * past K is its left child). Costs are summed over the same tree in float64,
 * counts as integers.
 *
 * Why a tree: a worker that computed a contiguous range of shards adds up
 * every whole node inside its range itself and sends one float32 vector per
 * node ({@link blocksOf}: one for a range that is a node, a few for any
 * other). The coordinator adds the received nodes up the rest of the tree.
 * Every addition is the same whoever does it, so the bits are the same for
 * any number of workers, in process included, while a worker sends about as
 * many bytes as one shard's gradient whatever its share of the step.
 *
 * Why float32 nodes: they halve what a worker sends (a float64 partial sum
 * is twice a gradient's bytes), and pairwise summation keeps the rounding of
 * K shards to log2(K) float32 roundings, well below the kernel's own float32
 * sums within a shard (PyTorch DDP, too, all-reduces float32 gradients).
 * The addition is the same everywhere: JavaScript adds in float64 and the
 * store into a Float32Array rounds to float32, and for the sum of two float32
 * values that double rounding equals one correctly rounded float32 addition
 * (float64 has more than 2·24 + 2 bits).
 */

import type { F32Heap } from "./f32-heap.js";

/** A node of a step's shard tree with its sums: shards [lo, hi). */
export interface GradBlock {
  lo: number;
  hi: number;
  /** The float32 tree sum of the shards' gradients. */
  grad: Float32Array;
  /** The float64 tree sum of their costs. */
  cost: number;
  /** Their examples. */
  count: number;
}

/** The size of the tree's root: the smallest power of two ≥ k. */
export function rootSize(k: number): number {
  let r = 1;
  while (r < k) r *= 2;
  return r;
}

/**
 * The nodes of the tree over `k` shards that tile the range [lo, hi), as
 * [start, end) pairs in order: from each start, the largest aligned node that
 * fits in the range. A node whose right child lies past `k` is named by its
 * left child (the smallest node of that extent), so each extent has one name.
 */
export function blocksOf(lo: number, hi: number, k: number): [number, number][] {
  if (!(Number.isInteger(lo) && Number.isInteger(hi) && 0 <= lo && lo < hi && hi <= k)) {
    throw new Error(`shard range [${lo}, ${hi}) is not inside a step of ${k} shards`);
  }
  const out: [number, number][] = [];
  let s = lo;
  while (s < hi) {
    let size = 1;
    while (s % (2 * size) === 0 && s + size < k && Math.min(s + 2 * size, k) <= hi) size *= 2;
    const end = Math.min(s + size, k);
    out.push([s, end]);
    s = end;
  }
  return out;
}

/**
 * The size (a power of two) of the tree node that block [lo, hi) names: a
 * block of blocksOf is either a whole node or the part of one before k, and
 * in both cases its node is the smallest power of two that holds it.
 */
function nodeSize(lo: number, hi: number): number {
  return rootSize(hi - lo);
}

/**
 * Adds blocks up a step's shard tree, in scratch buffers reused from call to
 * call (one pair per tree level).
 */
export class ShardTree {
  private readonly left: Float32Array[] = [];
  private readonly right: Float32Array[] = [];
  private blocks = new Map<number, GradBlock & { size: number }>();
  private k = 0;

  /**
   * @param heap where to keep the partial sums: with one, additions of its
   *   buffers (blocks kept there too) are SIMD; without, a JavaScript loop.
   *   The same float32 sums either way.
   */
  constructor(
    private readonly paramCount: number,
    private readonly heap?: F32Heap,
  ) {}

  /** Partial-sum buffers a tree over `k` shards may need (to size a heap). */
  static scratchBuffers(k: number): number {
    return 2 * Math.log2(rootSize(k));
  }

  /**
   * The sum of the node [lo, hi) (an entry of blocksOf) of a tree over `k`
   * shards, from blocks that tile it in order; written into `out` unless the
   * node is one of the blocks (then that block's gradient is returned).
   */
  sum(blocks: readonly GradBlock[], lo: number, hi: number, k: number, out: Float32Array): GradBlock {
    this.k = k;
    this.blocks.clear();
    let at = lo;
    for (const b of blocks) {
      if (b.lo !== at || b.hi > hi || b.grad.length !== this.paramCount) {
        throw new Error(`gradient blocks do not tile shards [${lo}, ${hi}): [${b.lo}, ${b.hi}) at ${at}`);
      }
      this.blocks.set(b.lo, { ...b, size: nodeSize(b.lo, b.hi) });
      at = b.hi;
    }
    if (at !== hi) throw new Error(`gradient blocks end at shard ${at}, not ${hi}`);
    const size = nodeSize(lo, hi);
    const r = this.node(lo, size, out);
    return { lo, hi, ...r };
  }

  private scratch(): Float32Array {
    return this.heap ? this.heap.alloc() : new Float32Array(this.paramCount);
  }

  /** The sums of node [s, s + size) ∩ [0, k), written into `out` when they are not a block's. */
  private node(
    s: number,
    size: number,
    out: Float32Array,
  ): { grad: Float32Array; cost: number; count: number } {
    const b = this.blocks.get(s);
    if (b && b.size === size) return b;
    if (size === 1) throw new Error(`no gradient for shard ${s}`);
    const half = size / 2;
    const level = Math.log2(half);
    this.left[level] ??= this.scratch();
    const L = this.node(s, half, this.left[level]);
    if (s + half >= this.k) return L;
    this.right[level] ??= this.scratch();
    const R = this.node(s + half, half, this.right[level]);
    if (!this.heap?.add(out, L.grad, R.grad)) addF32(out, L.grad, R.grad);
    return { grad: out, cost: L.cost + R.cost, count: L.count + R.count };
  }
}

/**
 * out = a + b, value by value, in float32: stored into a Float32Array, the
 * float64 sum rounds to the correctly rounded float32 sum (see above). A
 * function of its own, monomorphic and small, so that V8 optimizes it at
 * once (inside the recursion it stayed slow: 8 ns a value).
 */
function addF32(out: Float32Array, a: Float32Array, b: Float32Array): void {
  const n = out.length;
  for (let p = 0; p < n; p++) out[p] = a[p] + b[p];
}
