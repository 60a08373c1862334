/**
 * The coordinator's parts of a direct step, without sockets or processes:
 * the pool of workers (who gets a step, who gets a range next), the step in
 * hand (sends, deadlines on fake timers, ranges sent again) and what a
 * RESULT frame becomes (kept, refused, dropped and counted). Links are
 * plain objects that record the STEP frames they are sent.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ClusterStats } from "../src/coordinator/cluster-stats.js";
import { RangeResults } from "../src/coordinator/range-results.js";
import { ResultIntake } from "../src/coordinator/result-intake.js";
import { type StepContext, StepDispatch, type StepLink } from "../src/coordinator/step-dispatch.js";
import { StepRound } from "../src/coordinator/step-round.js";
import { WorkerPool } from "../src/coordinator/worker-pool.js";
import type { ShardRange } from "../src/core/plan.js";
import { blocksOf } from "../src/core/shard-tree.js";
import { StepAbortedError, type StepRequest } from "../src/core/trainer.js";
import type { Logger } from "../src/shared/log.js";
import { resultFrameBytes, resultFrameIn } from "../src/shared/step-frames.js";

/** Parameters of the model of these tests. */
const P = 6;

/** A worker's link that records the ranges of the STEP frames it is sent. */
class FakeLink implements StepLink {
  busy = 0;
  closed = false;
  late = false;
  leaving = false;
  unsent = 0;
  viaMemory = false;
  resultsRead = 0;
  /** [lo, hi) of each STEP frame sent, in order. */
  readonly sent: [number, number][] = [];
  /** Each STEP frame's pieces, as sent. */
  readonly frames: Buffer[][] = [];
  closedWith?: string;

  constructor(readonly workerId: string) {}

  sendAll(pieces: Buffer[]): boolean {
    if (this.closed) return false;
    this.sent.push([pieces[0].readUInt32LE(17), pieces[0].readUInt32LE(21)]);
    this.frames.push(pieces);
    return true;
  }

  close(reason: string): void {
    this.closed = true;
    this.closedWith ??= reason;
  }
}

/** Links named as given, with fields set. */
function links(...ids: string[]): FakeLink[] {
  return ids.map((id) => new FakeLink(id));
}

/** A logger that keeps each line's level and message. */
function logLines(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const at = (level: string) => (_obj: object, msg: string) => lines.push(`${level}: ${msg}`);
  return { log: { info: at("info"), warn: at("warn"), error: at("error") } as unknown as Logger, lines };
}

/** Step `version` of `k` shards of 10 examples each (the last one of 3). */
function request(version: number, k: number): StepRequest {
  const shards: ShardRange[] = Array.from({ length: k }, (_, shard) => ({
    shard,
    start: shard * 10,
    end: shard * 10 + (shard === k - 1 ? 3 : 10),
  }));
  return {
    epoch: 0,
    step: version,
    version,
    params: new Float32Array(P),
    permutation: () => new Uint32Array(0),
    shards,
  };
}

/** A step's shared context over `pool`, on the fake timers' clock. */
function context(pool: WorkerPool<FakeLink>, timeoutMs = 500) {
  const { log, lines } = logLines();
  const stats = new ClusterStats();
  const state = { abandonAt: Number.POSITIVE_INFINITY, ticks: 0 };
  const ctx: StepContext<FakeLink> = {
    pool,
    stats,
    log,
    paramCount: P,
    timeoutMs,
    abandonAt: () => state.abandonAt,
    onTick: () => {
      state.ticks++;
    },
    now: () => Date.now(),
  };
  return { ctx, stats, lines, state };
}

/** A step in hand, started: `done` says how it ended. */
function started(req: StepRequest, workers: FakeLink[], ctx: StepContext<FakeLink>) {
  const step = new StepDispatch(req, workers, Buffer.alloc(P * 4), ctx);
  const done: { ok?: boolean; err?: Error } = {};
  step.start(
    () => {
      done.ok = true;
    },
    (e) => {
      done.err = e;
    },
  );
  step.arm();
  return { step, done };
}

/** The body of a RESULT frame of `req`'s shards [lo, hi): the plan's counts, costs `cost`, gradients `fill`. */
function resultBody(req: StepRequest, lo: number, hi: number, fill: number, cost = 0.5): Buffer {
  const blocks = blocksOf(lo, hi, req.shards.length);
  const out = Buffer.allocUnsafeSlow(resultFrameBytes(blocks.length, P) + 3).subarray(3);
  const r = resultFrameIn(out, req.version, lo, hi, blocks.length, P);
  for (const [i, [a, b]] of blocks.entries()) {
    r.counts[i] = req.shards.slice(a, b).reduce((n, s) => n + s.end - s.start, 0);
    r.costs[i] = cost;
  }
  r.grads.fill(fill);
  r.setSeconds(0.01);
  // As the FrameReader hands bodies out: the frame without its 5-byte head, 8-byte aligned.
  const body = Buffer.allocUnsafeSlow(r.frame.length - 5);
  r.frame.copy(body, 0, 5);
  return body;
}

describe("WorkerPool", () => {
  it("shares a step among the open workers in join order, the late ones only when no other can take it", () => {
    const pool = new WorkerPool<FakeLink>();
    const [a, b, c, d, e] = links("a", "b", "c", "d", "e");
    for (const l of [a, b, c, d, e]) pool.add(l);
    b.late = true;
    c.leaving = true;
    d.closed = true;
    expect(pool.forStep().map((l) => l.workerId)).toEqual(["a", "e"]);
    a.late = true;
    e.late = true;
    expect(pool.forStep().map((l) => l.workerId)).toEqual(["a", "b", "e"]);
    expect(pool.remove(b)).toBe(true);
    expect(pool.remove(b)).toBe(false);
    expect(pool.size).toBe(4);
  });

  it("gives a range to the least busy open worker but the one named, a late one last", () => {
    const pool = new WorkerPool<FakeLink>();
    const [a, b, c] = links("a", "b", "c");
    for (const l of [a, b, c]) pool.add(l);
    a.busy = 2;
    b.busy = 1;
    c.busy = 1;
    expect(pool.pick()?.workerId).toBe("b");
    expect(pool.pick(b)?.workerId).toBe("c");
    c.late = true;
    expect(pool.pick(b)?.workerId).toBe("a");
    a.leaving = true;
    expect(pool.pick(b)?.workerId).toBe("c");
    c.closed = true;
    expect(pool.pick(b)).toBeUndefined();
    expect(pool.anyUnsent()).toBe(false);
    b.unsent = 10;
    expect(pool.anyUnsent()).toBe(true);
  });

  it("lets a leaving worker go once it holds nothing of the step in hand", () => {
    const pool = new WorkerPool<FakeLink>();
    const [a, b] = links("a", "b");
    pool.add(a);
    pool.add(b);
    const round = new StepRound(4, [a, b], 1000);
    pool.releaseIfIdle(a, round);
    expect(a.closed).toBe(false); // not leaving
    a.leaving = true;
    pool.releaseIfIdle(a, round);
    expect(a.closed).toBe(false); // still holds [0, 2)
    round.accept(round.units[0]);
    pool.releaseIfIdle(a, round);
    expect(a.closedWith).toBe("released");
    b.leaving = true;
    pool.releaseIfIdle(b, undefined);
    expect(b.closedWith).toBe("released");
  });
});

describe("StepDispatch", () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("sends each worker its range once, and is done when every range is accepted", () => {
    const pool = new WorkerPool<FakeLink>();
    const [a, b] = links("a", "b");
    pool.add(a);
    pool.add(b);
    const { ctx, stats } = context(pool);
    const { step, done } = started(request(7, 5), [a, b], ctx);
    expect(a.sent).toEqual([[0, 3]]);
    expect(b.sent).toEqual([[3, 5]]);
    expect([a.busy, b.busy]).toEqual([1, 1]);
    step.accept(step.round.unit(3, 5)!, b, 0.25);
    expect(done.ok).toBeUndefined();
    step.accept(step.round.unit(0, 3)!, a, 0.5);
    expect(done.ok).toBe(true);
    expect([...step.perWorker]).toEqual([
      ["b", 0.25],
      ["a", 0.5],
    ]);
    expect([...stats.workersSeen]).toEqual(["b", "a"]);
    expect(stats.retriedShards).toBe(0);
    expect([a.busy, b.busy]).toEqual([0, 0]);
    step.end();
    expect(vi.getTimerCount()).toBe(0);
  });

  it("sends a lost worker's range to the least busy other at once, or to the next worker to join", () => {
    const pool = new WorkerPool<FakeLink>();
    const [a, b, c] = links("a", "b", "c");
    pool.add(a);
    pool.add(b);
    const { ctx, stats } = context(pool);
    const { step } = started(request(1, 4), [a, b], ctx);
    pool.remove(a);
    expect(step.left(a)).toBe(1);
    expect(b.sent).toEqual([
      [2, 4],
      [0, 2],
    ]);
    expect(b.busy).toBe(2);
    pool.remove(b);
    expect(step.left(b)).toBe(2);
    expect(step.round.unheld().length).toBe(2);
    expect(stats.retriedShards).toBe(2 + 4);
    pool.add(c);
    step.joined(c);
    expect(c.sent).toEqual([
      [0, 2],
      [2, 4],
    ]);
    expect(c.busy).toBe(2);
    step.end();
  });

  it("sends an overdue range elsewhere and marks its worker late; a refused one goes elsewhere too", () => {
    const pool = new WorkerPool<FakeLink>();
    const [a, b] = links("a", "b");
    pool.add(a);
    pool.add(b);
    const { ctx, stats, lines, state } = context(pool, 500);
    const { step } = started(request(2, 4), [a, b], ctx);
    step.accept(step.round.unit(2, 4)!, b, 0.1);
    vi.advanceTimersByTime(499);
    expect(a.late).toBe(false);
    vi.advanceTimersByTime(1);
    expect(state.ticks).toBe(1);
    expect(a.late).toBe(true);
    expect(b.sent).toEqual([
      [2, 4],
      [0, 2],
    ]);
    expect([a.busy, b.busy]).toEqual([0, 1]);
    expect(lines).toEqual(["warn: shards overdue (--step-timeout); sending them again"]);
    // Refused from b: back to a (late, but the only other).
    step.again(step.round.unit(0, 2)!, b);
    expect(a.sent).toEqual([
      [0, 2],
      [0, 2],
    ]);
    expect(stats.retriedShards).toBe(4);
    expect(step.round.unit(0, 2)!.retries).toBe(2);
    expect([a.busy, b.busy]).toEqual([1, 0]);
    step.end();
    // Given up with a range out: its worker holds nothing of the next step.
    expect(a.busy).toBe(0);
  });

  it("gives the step up at the stop's deadline, and after its end nothing acts on it", () => {
    const pool = new WorkerPool<FakeLink>();
    const [a] = links("a");
    pool.add(a);
    const { ctx, state } = context(pool, 30_000);
    const { step, done } = started(request(3, 4), [a], ctx);
    state.abandonAt = Date.now() + 200;
    step.arm();
    vi.advanceTimersByTime(200);
    expect(done.err).toBeInstanceOf(StepAbortedError);
    step.end();
    done.err = undefined;
    step.fail(new Error("late"));
    step.arm();
    expect(done.err).toBeUndefined();
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe("StepDispatch and shared memory", () => {
  it("sends a worker on the coordinator's host the header alone, with how many of its result files were read", () => {
    const pool = new WorkerPool<FakeLink>();
    const [local, remote] = links("local", "remote");
    local.viaMemory = true;
    local.resultsRead = 5;
    for (const l of [local, remote]) pool.add(l);
    const { ctx } = context(pool);
    const published: number[] = [];
    ctx.publishWeights = (version) => {
      published.push(version);
      return true;
    };
    const step = new StepDispatch(request(3, 4), [local, remote], Buffer.alloc(P * 4), ctx);
    step.start(
      () => {},
      () => {},
    );
    step.end();
    // The weights are put in place for the version; the local worker's frame is the header alone.
    expect(published).toEqual([3]);
    const [head] = local.frames[0];
    expect(local.frames[0]).toHaveLength(1);
    expect(head.readUInt32LE(25)).toBe(1);
    expect(head.readUInt32LE(29)).toBe(5);
    // The other gets the weights in the frame.
    expect(remote.frames[0]).toHaveLength(2);
    expect(remote.frames[0][0].readUInt32LE(25)).toBe(0);
    // Weights that cannot be put in place go in every frame.
    ctx.publishWeights = () => false;
    const again = new StepDispatch(request(4, 4), [local], Buffer.alloc(P * 4), ctx);
    again.start(
      () => {},
      () => {},
    );
    again.end();
    expect(local.frames[1]).toHaveLength(2);
    expect(local.frames[1][0].readUInt32LE(25)).toBe(0);
  });
});

describe("ResultIntake", () => {
  /** A step of 4 shards over workers a and b, and an intake of its results. */
  function setUp() {
    const pool = new WorkerPool<FakeLink>();
    const [a, b] = links("a", "b");
    pool.add(a);
    pool.add(b);
    const { ctx, stats, lines } = context(pool);
    const kept = new RangeResults(P);
    const intake = new ResultIntake(P, kept, stats, ctx.log);
    const req = request(5, 4);
    const { step, done } = started(req, [a, b], ctx);
    return { a, b, req, step, done, stats, lines, kept, intake };
  }

  it("keeps good results; drops stale, unknown and duplicate ones, counted; a malformed one drops its worker", () => {
    const { a, b, req, step, done, stats, lines, kept, intake } = setUp();
    intake.take(a, resultBody(request(4, 4), 0, 2, 1), step);
    expect(stats.staleResults).toBe(1);
    intake.take(a, resultBody(req, 0, 1, 1), step);
    expect(stats.rejected.get("wrong_shard")).toBe(1);
    intake.take(a, resultBody(req, 0, 2, 1), step);
    intake.take(a, resultBody(req, 0, 2, 1), step);
    expect(stats.duplicateResults).toBe(1);
    expect(done.ok).toBeUndefined();
    intake.take(b, resultBody(req, 2, 4, 2), step);
    expect(done.ok).toBe(true);
    expect(kept.outcome(step.round.units, 0).blocks.map((x) => [x.lo, x.hi, x.count, x.grad[0]])).toEqual([
      [0, 2, 20, 1],
      [2, 4, 13, 2],
    ]);
    intake.take(b, resultBody(req, 2, 4, 2), undefined);
    expect(stats.staleResults).toBe(2);
    intake.take(b, Buffer.alloc(12), undefined);
    expect(stats.rejected.get("decode")).toBe(1);
    expect(b.closedWith).toBe("malformed result");
    expect(lines).toEqual([
      "error: refused a result for shards nobody asked for",
      "error: refused a malformed result; dropping the worker",
    ]);
    step.end();
  });

  it("refuses a wrong count and a first non-finite gradient and sends the range elsewhere; keeps a second non-finite one", () => {
    const { a, b, req, step, done, stats, lines, kept, intake } = setUp();
    const wrong = resultBody(req, 0, 2, 1);
    wrong.writeUInt32LE(21, 24); // the sample count of the range's one block (20)
    intake.take(a, wrong, step);
    expect(stats.rejected.get("wrong_shard")).toBe(1);
    expect(b.sent).toEqual([
      [2, 4],
      [0, 2],
    ]);
    intake.take(b, resultBody(req, 0, 2, Number.NaN), step);
    expect(stats.rejected.get("non_finite")).toBe(1);
    expect(a.sent).toEqual([
      [0, 2],
      [0, 2],
    ]);
    intake.take(b, resultBody(req, 2, 4, 2), step);
    intake.take(a, resultBody(req, 0, 2, Number.NaN), step);
    expect(done.ok).toBe(true);
    expect(stats.rejected.get("non_finite")).toBe(1);
    expect(Number.isNaN(kept.outcome(step.round.units, 0).blocks[0].grad[0])).toBe(true);
    expect(lines).toEqual([
      "error: refused a result with the wrong sample counts",
      "warn: refused a non-finite result; computing it again",
      "error: non-finite gradient again after a recompute",
    ]);
    step.end();
  });

  it("a range taken from a late worker frees the one it was sent to again, whose copy is then a duplicate: nobody stays busy", () => {
    vi.useFakeTimers({ now: 1_000_000 });
    try {
      const pool = new WorkerPool<FakeLink>();
      const [a, b] = links("a", "b");
      pool.add(a);
      pool.add(b);
      const { ctx, stats } = context(pool, 500);
      const intake = new ResultIntake(P, new RangeResults(P), stats, ctx.log);
      const req = request(9, 4);
      const { step, done } = started(req, [a, b], ctx);
      intake.take(b, resultBody(req, 2, 4, 2), step);
      vi.advanceTimersByTime(500);
      // a missed its deadline: its range went to b.
      expect(b.sent).toEqual([
        [2, 4],
        [0, 2],
      ]);
      expect([a.busy, b.busy]).toEqual([0, 1]);
      // a answers after all, first; b's copy comes after.
      intake.take(a, resultBody(req, 0, 2, 1), step);
      expect(done.ok).toBe(true);
      intake.take(b, resultBody(req, 0, 2, 1), step);
      expect(stats.duplicateResults).toBe(1);
      expect([a.busy, b.busy]).toEqual([0, 0]);
      step.end();
    } finally {
      vi.useRealTimers();
    }
  });

  it("a refused result from a late worker frees the range's holder too", () => {
    vi.useFakeTimers({ now: 1_000_000 });
    try {
      const pool = new WorkerPool<FakeLink>();
      const [a, b, c] = links("a", "b", "c");
      for (const l of [a, b, c]) pool.add(l);
      const { ctx, stats } = context(pool, 500);
      const intake = new ResultIntake(P, new RangeResults(P), stats, ctx.log);
      const req = request(9, 4);
      const { step } = started(req, [a], ctx);
      vi.advanceTimersByTime(500);
      expect(b.sent).toEqual([[0, 4]]);
      // a (late) sends a wrong count: the range goes to c, the least busy other than a; b holds nothing.
      const wrong = resultBody(req, 0, 4, 1);
      wrong.writeUInt32LE(1, 24);
      intake.take(a, wrong, step);
      expect(c.sent).toEqual([[0, 4]]);
      expect([a.busy, b.busy, c.busy]).toEqual([0, 0, 1]);
      step.end();
    } finally {
      vi.useRealTimers();
    }
  });

  it("a range whose cost is not finite twice is kept with its own gradients (the trainer reads them before it stops)", () => {
    const { a, b, req, step, done, stats, kept, intake } = setUp();
    // The first results of ranges starting at shard 2: RangeResults has no buffer for them yet.
    intake.take(b, resultBody(req, 2, 4, 3, Number.POSITIVE_INFINITY), step);
    expect(stats.rejected.get("non_finite")).toBe(1);
    intake.take(a, resultBody(req, 0, 2, 1), step);
    intake.take(a, resultBody(req, 2, 4, 4, Number.POSITIVE_INFINITY), step);
    expect(done.ok).toBe(true);
    const blocks = kept.outcome(step.round.units, 0).blocks;
    expect(blocks.map((x) => [x.lo, x.hi, x.count, x.cost, x.grad?.[0]])).toEqual([
      [0, 2, 20, 0.5, 1],
      [2, 4, 13, Number.POSITIVE_INFINITY, 4],
    ]);
    step.end();
  });
});
