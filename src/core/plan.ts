/**
 * The shard plan: how an epoch is cut into steps and a step's mini-batch
 * into a FIXED number of shards. It depends only on the run config, never on
 * how many workers are alive, which is what makes the result the same for
 * any worker count.
 *
 * Step s of an epoch takes positions [s·B, min((s+1)·B, N)) of the epoch's
 * permutation (the last batch may be smaller, so every sample is used once
 * per epoch). A batch of m examples is split into S contiguous shards, the
 * first m mod S shards one example larger. Shards of an undersized batch may
 * be empty; they are skipped.
 */

/** A contiguous range of permutation positions [start, end). */
export interface ShardRange {
  shard: number;
  start: number;
  end: number;
}

/** Number of steps (mini-batches) in one epoch of n examples. */
export function stepsPerEpoch(n: number, batch: number): number {
  return Math.ceil(n / batch);
}

/** The permutation positions covered by step `step` of an epoch. */
export function batchRange(n: number, batch: number, step: number): { start: number; end: number } {
  const start = step * batch;
  return { start, end: Math.min(start + batch, n) };
}

/** The non-empty shards of a step, in shard order. */
export function shardRanges(n: number, batch: number, shards: number, step: number): ShardRange[] {
  const { start, end } = batchRange(n, batch, step);
  const m = end - start;
  const base = Math.floor(m / shards);
  const rem = m % shards;
  const out: ShardRange[] = [];
  for (let k = 0; k < shards; k++) {
    const s = start + k * base + Math.min(k, rem);
    const e = s + base + (k < rem ? 1 : 0);
    if (e > s) out.push({ shard: k, start: s, end: e });
  }
  return out;
}
