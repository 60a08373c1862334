/**
 * The pure parts of direct steps: the wire format (frames cut at any byte
 * boundary), the split of a step's shards into ranges, the step round's
 * bookkeeping with a fake clock, and the verdict on a fleet that refuses the
 * run. (The shard tree that keeps the bits has its own tests:
 * shard-tree.test.ts.)
 */
import { describe, expect, it } from "vitest";
import { checkRange, RangeResults } from "../src/coordinator/range-results.js";
import { RefusingFleet } from "../src/coordinator/refusing-fleet.js";
import { StepRound, splitShards } from "../src/coordinator/step-round.js";
import { treeHeap } from "../src/core/f32-heap.js";
import { blocksOf } from "../src/core/shard-tree.js";
import {
  decodeControl,
  decodeResult,
  decodeStep,
  encodeControl,
  encodeStepHeader,
  FrameReader,
  FrameType,
  resultFrameBytes,
  resultFrameIn,
} from "../src/shared/step-frames.js";

/** A buffer whose byteOffset + 5 is a multiple of 8, as the worker allocates them. */
function frameBuffer(size: number): Buffer {
  return Buffer.allocUnsafeSlow(size + 3).subarray(3);
}

describe("step frames", () => {
  it("a STEP and RESULTs survive being cut into 1..7-byte chunks", () => {
    const P = 13;
    const params = Float32Array.from({ length: P }, (_, i) => i * 0.5 - 3);
    const step = Buffer.concat([
      encodeStepHeader({ version: 7, epoch: 1, step: 2, lo: 0, hi: 3, inMemory: false }, P),
      Buffer.from(params.buffer),
    ]);
    const prefix = resultFrameIn(frameBuffer(resultFrameBytes(1, P)), 7, 0, 3, 1, P);
    prefix.counts[0] = 300;
    prefix.costs[0] = 12.5;
    for (let i = 0; i < P; i++) prefix.grads[i] = i / 4;
    prefix.setSeconds(0.25);
    const tail = resultFrameIn(frameBuffer(resultFrameBytes(2, P)), 7, 3, 5, 2, P);
    tail.counts.set([100, 99]);
    tail.costs.set([1.5, 2.5]);
    for (let i = 0; i < 2 * P; i++) tail.grads[i] = -i;
    const hello = encodeControl(FrameType.hello, { workerId: "w" });
    const stream = Buffer.concat([step, prefix.frame, tail.frame, hello]);
    const got: { type: number; body: Buffer }[] = [];
    const reader = new FrameReader((type, body) => got.push({ type, body: Buffer.from(body) }));
    for (let i = 0, k = 1; i < stream.length; i += k, k = (k % 7) + 1) reader.push(stream.subarray(i, i + k));
    expect(got.map((g) => g.type)).toEqual([
      FrameType.step,
      FrameType.result,
      FrameType.result,
      FrameType.hello,
    ]);
    // Decoding needs 8-byte aligned bodies, as the reader hands them out.
    const aligned = (b: Buffer) => {
      const out = Buffer.allocUnsafeSlow(b.length);
      b.copy(out);
      return out;
    };
    const s = decodeStep(aligned(got[0].body), P);
    expect(s.order).toEqual({ version: 7, epoch: 1, step: 2, lo: 0, hi: 3, inMemory: false });
    expect([...(s.params ?? [])]).toEqual([...params]);
    const r0 = decodeResult(aligned(got[1].body), P);
    expect([r0.version, r0.lo, r0.hi, r0.computeSeconds, r0.counts[0], r0.costs[0]]).toEqual([
      7, 0, 3, 0.25, 300, 12.5,
    ]);
    expect(r0.grads.length).toBe(P);
    expect(r0.grads[5]).toBe(5 / 4);
    const r1 = decodeResult(aligned(got[2].body), P);
    expect([...r1.counts]).toEqual([100, 99]);
    expect([...r1.costs]).toEqual([1.5, 2.5]);
    expect(r1.grads.length).toBe(2 * P);
    expect(r1.grads[2 * P - 1]).toBe(-(2 * P - 1));
    expect(decodeControl(got[3].body)).toEqual({ workerId: "w" });
  });

  it("refuses a frame larger than allowed, and results of the wrong size or range", () => {
    const reader = new FrameReader(() => {}, 100);
    const head = Buffer.alloc(5);
    head.writeUInt32LE(101, 0);
    expect(() => reader.push(head)).toThrow(/out of bounds/);
    const r = resultFrameIn(frameBuffer(resultFrameBytes(1, 4)), 0, 1, 2, 1, 4);
    const body = Buffer.allocUnsafeSlow(r.frame.length - 5);
    r.frame.copy(body, 0, 5);
    expect(() => decodeResult(body, 5)).toThrow(/expected/);
    body.writeUInt32LE(2, 12); // two blocks for a range of one shard
    expect(() => decodeResult(body, 4)).toThrow(/names 2 blocks/);
    body.writeUInt32LE(1, 12);
    body.writeUInt32LE(1, 8); // hi = lo: an empty range
    expect(() => decodeResult(body, 4)).toThrow(/names shards \[1, 1\)/);
  });
});

describe("splitShards", () => {
  it("cuts shards into contiguous, even ranges that cover them once", () => {
    for (let k = 1; k <= 17; k++) {
      for (let n = 1; n <= 9; n++) {
        const spans = splitShards(k, n);
        expect(spans.length).toBe(Math.min(k, n));
        expect(spans[0].lo).toBe(0);
        expect(spans.at(-1)!.hi).toBe(k);
        for (let i = 1; i < spans.length; i++) expect(spans[i].lo).toBe(spans[i - 1].hi);
        const sizes = spans.map((s) => s.hi - s.lo);
        expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
      }
    }
  });
});

describe("StepRound", () => {
  it("tracks holders, duplicates and deadlines on its own clock", () => {
    let now = 1000;
    const round = new StepRound(8, ["a", "b", "c"], 500, () => now);
    expect(round.units.map((u) => [u.lo, u.hi, u.holder])).toEqual([
      [0, 3, "a"],
      [3, 6, "b"],
      [6, 8, "c"],
    ]);
    expect(round.overdue()).toEqual([]);
    expect(round.accept(round.unit(3, 6)!)).toBe(true);
    expect(round.accept(round.unit(3, 6)!)).toBe(false);
    expect(round.unit(2, 6)).toBeUndefined();
    now = 1500;
    expect(round.overdue().map((u) => u.lo)).toEqual([0, 6]);
    round.assign(round.unit(0, 3)!, "c", true);
    expect(round.unit(0, 3)!.retries).toBe(1);
    expect(round.heldBy("c").map((u) => u.lo)).toEqual([0, 6]);
    expect(round.nextDeadline()).toBe(1500);
    round.assign(round.unit(6, 8)!, undefined, true);
    expect(round.unheld().map((u) => u.lo)).toEqual([6]);
    round.accept(round.unit(0, 3)!);
    expect(round.complete).toBe(false);
    round.accept(round.unit(6, 8)!);
    expect(round.complete).toBe(true);
  });

  it("with no worker, the whole step is one unit nobody holds", () => {
    const round = new StepRound<string>(4, [], 1000);
    expect(round.units.map((u) => [u.lo, u.hi, u.holder])).toEqual([[0, 4, undefined]]);
    expect(round.unheld().length).toBe(1);
  });
});
describe("RefusingFleet", () => {
  it("names the workers that cannot serve the run, whatever printable ASCII their ids hold", () => {
    let now = 0;
    const ids = ["w1", "host:4242", 'ok:refused:"data_mismatch"', "x".repeat(128)];
    const fleet = new RefusingFleet(() => now);
    for (const id of ids) expect(fleet.refused(id, "data_mismatch")).toBe(true);
    // The same refusal again is no news (the coordinator logs news only).
    expect(fleet.refused("w1", "data_mismatch")).toBe(false);
    // Every live worker refuses: the verdict comes after a whole step timeout.
    expect(fleet.check(ids, 0, 1000)).toBeUndefined();
    now = 999;
    expect(fleet.check(ids, 0, 1000)).toBeUndefined();
    now = 1000;
    const e = fleet.check(ids, 0, 1000)!;
    expect(e.message).toContain("no live worker can serve this run: all 4");
    // Each id as a JSON string (quotes escaped), cut at 64 characters.
    for (const id of ids) expect(e.message).toContain(JSON.stringify(id.slice(0, 64)));
    expect(e.message).toContain("(last reason: data_mismatch)");
  });

  it("waits while a live worker has not refused, or one is connected", () => {
    let now = 0;
    const fleet = new RefusingFleet(() => now);
    fleet.refused("bad", "data_mismatch");
    // A good worker still loading its data beats but has not refused.
    expect(fleet.check(["bad", "good"], 0, 10)).toBeUndefined();
    now = 100;
    expect(fleet.check(["bad", "good"], 0, 10)).toBeUndefined();
    // One is connected: the run goes on.
    expect(fleet.check(["bad"], 1, 10)).toBeUndefined();
    // The refusing worker is gone from the live set: forgotten.
    expect(fleet.check([], 0, 10)).toBeUndefined();
    expect(fleet.any).toBe(false);
  });
});

describe("range results", () => {
  const P = 6;
  /** Step of 5 shards of 10, 10, 10, 10 and 3 examples. */
  const shards = [0, 1, 2, 3, 4].map((shard) => ({
    shard,
    start: shard * 10,
    end: shard * 10 + (shard === 4 ? 3 : 10),
  }));
  /** A decoded result of shards [lo, hi): the plan's counts, finite costs, gradient values `fill`. */
  function result(lo: number, hi: number, fill: number) {
    const blocks = blocksOf(lo, hi, shards.length);
    const r = resultFrameIn(frameBuffer(resultFrameBytes(blocks.length, P)), 3, lo, hi, blocks.length, P);
    for (const [i, [a, b]] of blocks.entries()) {
      r.counts[i] = shards.slice(a, b).reduce((n, s) => n + s.end - s.start, 0);
      r.costs[i] = 0.5;
    }
    r.grads.fill(fill);
    const body = Buffer.allocUnsafeSlow(r.frame.length - 5);
    r.frame.copy(body, 0, 5);
    return decodeResult(body, P);
  }

  it("checks counts and costs, stages a copy whose gradients it checks, keeps blocks in shard order", () => {
    const heap = treeHeap(P, shards.length);
    for (const kept of [new RangeResults(P), new RangeResults(P, heap)]) {
      const tail = result(3, 5, 2);
      const head = result(0, 3, 1);
      expect(checkRange(shards, head)).toBeUndefined();
      const wrong = result(0, 3, 1);
      wrong.counts[1] += 1;
      expect(checkRange(shards, wrong)).toBe("wrong_shard");
      const badCost = result(3, 5, 0);
      badCost.costs[0] = Number.NaN;
      expect(checkRange(shards, badCost)).toBe("non_finite");
      const nan = result(3, 5, 0);
      nan.grads[P + 2] = Number.POSITIVE_INFINITY;
      expect(kept.stage(nan, shards.length)).toBe(false);
      expect(kept.stage(tail, shards.length)).toBe(true);
      expect(kept.stage(head, shards.length)).toBe(true);
      const units = [
        { lo: 0, hi: 3 },
        { lo: 3, hi: 5 },
      ];
      kept.keep(units[1], tail, shards.length);
      kept.keep(units[0], head, shards.length);
      const out = kept.outcome(units, 0);
      expect(out.blocks.map((b) => [b.lo, b.hi, b.count, b.grad[0]])).toEqual([
        [0, 2, 20, 1],
        [2, 3, 10, 1],
        [3, 4, 10, 2],
        [4, 5, 3, 2],
      ]);
    }
  });
});
