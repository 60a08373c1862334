/**
 * One step of direct dispatch, as pure bookkeeping (no I/O, an injectable
 * clock): the step's shards cut into contiguous ranges, one per worker, who
 * holds which range, which are back, and which are overdue.
 */

/** A contiguous range of a step's non-empty shards, [lo, hi). */
export interface ShardSpan {
  lo: number;
  hi: number;
}

/**
 * Cuts shards [0, k) into `n` contiguous ranges as even as they can be (the
 * first k mod n ranges one shard larger); fewer ranges when k < n.
 */
export function splitShards(k: number, n: number): ShardSpan[] {
  const parts = Math.max(1, Math.min(k, n));
  const base = Math.floor(k / parts);
  const rem = k % parts;
  const out: ShardSpan[] = [];
  let lo = 0;
  for (let i = 0; i < parts; i++) {
    const hi = lo + base + (i < rem ? 1 : 0);
    out.push({ lo, hi });
    lo = hi;
  }
  return out;
}

/** A range of the step and where it stands. */
export interface Unit<W> extends ShardSpan {
  /** Who computes it now (undefined: nobody yet). */
  holder?: W;
  /** When the holder's time is up (ms, the round's clock). */
  deadline: number;
  done: boolean;
  /** Times it was handed out again (deadline, lost worker, refused result). */
  retries: number;
}

/** The units of one step, for workers of type W. */
export class StepRound<W> {
  readonly units: Unit<W>[];
  private left: number;

  /**
   * @param k the step's non-empty shards
   * @param workers the workers to share them (in order; the first gets shard 0)
   */
  constructor(
    k: number,
    workers: readonly W[],
    private readonly timeoutMs: number,
    private readonly now: () => number = Date.now,
  ) {
    const spans = splitShards(k, workers.length || 1);
    const t = now();
    this.units = spans.map((s, i) => ({
      ...s,
      holder: workers[i],
      deadline: t + timeoutMs,
      done: false,
      retries: 0,
    }));
    this.left = this.units.length;
  }

  /** Every unit is back. */
  get complete(): boolean {
    return this.left === 0;
  }

  /** The unit exactly [lo, hi), if the round has one. */
  unit(lo: number, hi: number): Unit<W> | undefined {
    return this.units.find((u) => u.lo === lo && u.hi === hi);
  }

  /** Marks a unit done; false when it was already (a duplicate). */
  accept(u: Unit<W>): boolean {
    if (u.done) return false;
    u.done = true;
    this.left--;
    return true;
  }

  /** Gives unit `u` to `w` with a fresh deadline. */
  assign(u: Unit<W>, w: W | undefined, retry: boolean): void {
    u.holder = w;
    u.deadline = this.now() + this.timeoutMs;
    if (retry) u.retries++;
  }

  /** Units not back whose holder is `w`. */
  heldBy(w: W): Unit<W>[] {
    return this.units.filter((u) => !u.done && u.holder === w);
  }

  /** Units not back that nobody holds. */
  unheld(): Unit<W>[] {
    return this.units.filter((u) => !u.done && u.holder === undefined);
  }

  /** Units not back whose deadline has passed. */
  overdue(): Unit<W>[] {
    const t = this.now();
    return this.units.filter((u) => !u.done && u.deadline <= t);
  }

  /** The earliest deadline of a unit not back (Infinity when none). */
  nextDeadline(): number {
    let m = Number.POSITIVE_INFINITY;
    for (const u of this.units) if (!u.done && u.deadline < m) m = u.deadline;
    return m;
  }
}
