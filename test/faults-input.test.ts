/**
 * Hostile or broken input on the coordinator's data port, against a real
 * coordinator process while a real worker process does the real work.
 *
 * A rogue client in this process reads the session's token from the run
 * spec in Redis, says hello like a worker, and answers every range it is
 * sent with a bad result: wrong sample counts, non-finite gradients or
 * costs, frames of the wrong size or naming no shards, a frame type the
 * protocol does not have, a length prefix past any limit, or it vanishes.
 * Before that it may slip in a result for an old version (stale), a copy of
 * the other worker's range (a duplicate: whichever of the two comes second)
 * and a result for shards nobody asked for. Every bad result is refused and
 * counted by reason, every range it held is computed again by the real
 * worker, every late copy is dropped and counted, and the weights end
 * bit-identical to in-process training. Strangers (a wrong token, a first
 * frame that is not a hello) are turned away, and seat jobs with bad data
 * are dropped by the real worker.
 */
import { connect, type Socket } from "node:net";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadDataset } from "../src/core/data/index.js";
import type { DataBundle } from "../src/core/dataset.js";
import { type Kernel, makeKernel } from "../src/core/kernel.js";
import { shardRanges } from "../src/core/plan.js";
import { epochPermutation } from "../src/core/prng.js";
import { blocksOf, ShardTree } from "../src/core/shard-tree.js";
import { runKeys, SEATS_QUEUE_NAME } from "../src/shared/keys.js";
import { decodeRunSpec, type RunSpec } from "../src/shared/run-spec.js";
import {
  decodeControl,
  decodeStep,
  encodeControl,
  FrameReader,
  FrameType,
  type Hello,
  resultFrameBytes,
  resultFrameIn,
  type StepOrder,
} from "../src/shared/step-frames.js";
import { type CliProcess, logRecords, stopCli, waitFor } from "./helpers/cli.js";
import { startTestRedis, type TestRedis } from "./helpers/redis.js";
import { Tracked } from "./helpers/tracked.js";

const TRAIN = 6000;
const BATCH = 64;
// Steps are fast (a few ms): enough of them that the rogue, which misses a
// step or two each time it is dropped, plays every kind several times.
const EPOCHS = 4;
const RUN = [
  "--train-limit",
  String(TRAIN),
  "--test-limit",
  "1000",
  "--epochs",
  String(EPOCHS),
  "--batch",
  String(BATCH),
  "--shards",
  "4",
  "--json",
];
const STEPS = EPOCHS * Math.ceil(TRAIN / BATCH);

const procs = new Tracked();
let redis: TestRedis;
let baseline: Record<string, unknown>;
let data: DataBundle;

beforeAll(async () => {
  redis = await startTestRedis();
  const r = await procs.run(["train", ...RUN, "--workers", "0"]);
  expect(r.code, r.stderr).toBe(0);
  baseline = r.json!;
  expect(baseline.samples).toBe(EPOCHS * TRAIN);
  data = await loadDataset({ trainLimit: TRAIN, testLimit: 1000 });
});

afterAll(async () => {
  await procs.killAll();
  await redis?.stop();
});

/** Lines of a process's stderr with log message `msg`. */
function logLines(stderr: string, msg: string): number {
  return logRecords(stderr, msg).length;
}

/**
 * A RESULT frame for shards [lo, hi) of `version`: one block per node of the
 * shard tree that tiles the range (hi may pass the step's shards, for a
 * range nobody asked for), zero gradients and the plan's counts, to be spoiled.
 */
function resultFrame(order: StepOrder, lo: number, hi: number, spec: RunSpec, version = order.version) {
  const P = spec.paramCount;
  const ranges = shardRanges(spec.data.trainN, spec.config.batch, spec.config.shards, order.step);
  const blocks = blocksOf(lo, hi, Math.max(ranges.length, hi));
  // Body at an 8-byte boundary, as the worker lays it out.
  const out = Buffer.allocUnsafeSlow(resultFrameBytes(blocks.length, P) + 3).subarray(3);
  const r = resultFrameIn(out, version, lo, hi, blocks.length, P);
  r.grads.fill(0);
  const sizes = (k: number) => (ranges[k] ? ranges[k].end - ranges[k].start : 0);
  for (const [i, [a, b]] of blocks.entries()) {
    let n = 0;
    for (let k = a; k < b; k++) n += sizes(k);
    r.counts[i] = n;
    r.costs[i] = 1;
  }
  r.setSeconds(0);
  return { ...r, blocks };
}

/** What one play of the rogue did to the range it held, and what the coordinator must count for it. */
interface Verdict {
  name: string;
  /** Counted under this reason in rejectedByReason (undefined: not a result, not counted). */
  reason?: string;
  /** The coordinator drops the connection (the rogue dials again). */
  drops: boolean;
  /** The frames to send for range [lo, hi) of the step. */
  frames(order: StepOrder, lo: number, hi: number, spec: RunSpec): Buffer[];
}

const VERDICTS: Verdict[] = [
  {
    name: "wrong sample count",
    reason: "wrong_shard",
    drops: false,
    frames: (o, lo, hi, spec) => {
      const r = resultFrame(o, lo, hi, spec);
      r.counts[0] += 1;
      return [r.frame];
    },
  },
  {
    name: "NaN in the gradient",
    reason: "non_finite",
    drops: false,
    frames: (o, lo, hi, spec) => {
      const r = resultFrame(o, lo, hi, spec);
      r.grads[7] = Number.NaN;
      return [r.frame];
    },
  },
  {
    name: "infinite cost",
    reason: "non_finite",
    drops: false,
    frames: (o, lo, hi, spec) => {
      const r = resultFrame(o, lo, hi, spec);
      r.costs[0] = Number.POSITIVE_INFINITY;
      return [r.frame];
    },
  },
  {
    name: "result 8 bytes short",
    reason: "decode",
    drops: true,
    frames: (o, lo, hi, spec) => {
      const f = Buffer.from(resultFrame(o, lo, hi, spec).frame.subarray(0, -8));
      f.writeUInt32LE(f.length - 4, 0);
      return [f];
    },
  },
  {
    name: "result naming no shards (hi = lo)",
    reason: "decode",
    drops: true,
    frames: (o, lo, _hi, spec) => {
      const f = Buffer.from(resultFrame(o, lo, lo + 1, spec).frame);
      f.writeUInt32LE(lo, 13);
      return [f];
    },
  },
  {
    name: "a frame type the protocol does not have",
    drops: true,
    frames: () => [encodeControl(7, { evil: true })],
  },
  {
    name: "a length prefix past any limit",
    drops: true,
    frames: () => {
      const f = Buffer.alloc(5);
      f.writeUInt32LE(0x7fffffff, 0);
      f.writeUInt8(FrameType.result, 4);
      return [f];
    },
  },
  { name: "vanishes holding the range", drops: true, frames: () => [] },
];

/** A client that speaks the step-frame protocol and never delivers a good result; see the module comment. */
class Rogue {
  readonly played = new Map<string, number>();
  readonly expectedByReason: Record<string, number> = {};
  expectedRetries = 0;
  expectedDuplicates = 0;
  expectedStale = 0;
  wrongRange = 0;
  private next = 0;
  private socket?: Socket;
  private done = false;
  private readonly kernel: Kernel;

  constructor(private readonly spec: RunSpec) {
    this.kernel = makeKernel(spec.config.kernel, spec.config.spec);
  }

  /** Dials the data port and says hello; dials again whenever the coordinator drops it, until stop(). */
  dial(): void {
    if (this.done) return;
    const { host, port, token } = this.spec.direct;
    const socket = connect({ host, port });
    this.socket = socket;
    const reader = new FrameReader((type, body) => {
      if (type === FrameType.step) this.onStep(socket, body);
      else if (type === FrameType.bye && decodeControl(body).reason === "run over") this.done = true;
    });
    socket.on("connect", () => {
      const hello: Hello = { token, session: this.spec.session, workerId: "rogue" };
      socket.write(encodeControl(FrameType.hello, hello));
    });
    socket.on("data", (chunk: Buffer) => reader.push(chunk));
    socket.on("error", () => {});
    socket.on("close", () => setImmediate(() => this.dial()));
  }

  stop(): void {
    this.done = true;
    this.socket?.destroy();
  }

  private count(name: string): void {
    this.played.set(name, (this.played.get(name) ?? 0) + 1);
  }

  /** A STEP frame: first the injections that leave the range held, then a verdict that hands it back. */
  private onStep(socket: Socket, body: Buffer): void {
    const spec = this.spec;
    const { order, params } = decodeStep(body, spec.paramCount);
    // This worker offers no shared memory in its HELLO: the weights are in the frame.
    if (!params) throw new Error("a STEP frame without weights to a worker that offered no shared memory");
    const { lo, hi } = order;
    const shards = shardRanges(spec.data.trainN, spec.config.batch, spec.config.shards, order.step).length;
    const out: Buffer[] = [];
    // A result for the previous version: dropped as stale.
    if (order.version > 0) {
      out.push(resultFrame(order, lo, hi, spec, order.version - 1).frame);
      this.expectedStale++;
      this.count("result for the previous version");
    }
    // A true copy of the other worker's range (two workers: the rest of the
    // step). The step cannot end while this range is held, so whichever of
    // the copy and the real worker's result comes second is a duplicate.
    const other = lo === 0 ? [hi, shards] : [0, lo];
    if (other[0] < other[1]) {
      out.push(this.trueResult(order, params, other[0], other[1]));
      this.expectedDuplicates++;
      this.count("true copy of the other worker's range");
    }
    // Shards nobody asked for: refused, and the range is still held.
    out.push(resultFrame(order, lo, hi + 1, spec).frame);
    this.expectedByReason.wrong_shard = (this.expectedByReason.wrong_shard ?? 0) + 1;
    this.wrongRange++;
    this.count("result for shards nobody asked for");
    const v = VERDICTS[this.next++ % VERDICTS.length];
    out.push(...v.frames(order, lo, hi, spec));
    if (v.reason) this.expectedByReason[v.reason] = (this.expectedByReason[v.reason] ?? 0) + 1;
    // Every verdict hands the range back: the real worker computes it again.
    this.expectedRetries += hi - lo;
    this.count(v.name);
    // Vanishing: the frames still go out first (end flushes, destroy would not).
    if (v.name === "vanishes holding the range") socket.end(Buffer.concat(out));
    else socket.write(Buffer.concat(out));
  }

  /** The result a faithful worker sends for shards [lo, hi): the same bits (see direct-seat.ts). */
  private trueResult(order: StepOrder, params: Float32Array, lo: number, hi: number): Buffer {
    const spec = this.spec;
    const P = spec.paramCount;
    const ranges = shardRanges(spec.data.trainN, spec.config.batch, spec.config.shards, order.step);
    const perm = epochPermutation(spec.data.trainN, spec.config.seed, order.epoch);
    const r = resultFrame(order, lo, hi, spec);
    const tree = new ShardTree(P);
    for (const [i, [a, b]] of r.blocks.entries()) {
      const leaves = [];
      for (let k = a; k < b; k++) {
        const grad = new Float32Array(P);
        const g = this.kernel.gradSum(params, data.train, perm, ranges[k].start, ranges[k].end, grad);
        leaves.push({ lo: k, hi: k + 1, grad, ...g });
      }
      const node = tree.sum(leaves, a, b, ranges.length, new Float32Array(P));
      r.grads.set(node.grad, i * P);
      r.costs[i] = node.cost;
      r.counts[i] = node.count;
    }
    return Buffer.from(r.frame);
  }
}

/** Says hello with `hello` (or sends `first` instead) and resolves with the coordinator's BYE reason, if any. */
function stranger(spec: RunSpec, first: Buffer): Promise<string | undefined> {
  return new Promise((resolve) => {
    let reason: string | undefined;
    const socket = connect({ host: spec.direct.host, port: spec.direct.port });
    const reader = new FrameReader((type, body) => {
      if (type === FrameType.bye) reason = String(decodeControl(body).reason);
    });
    socket.on("connect", () => socket.write(first));
    socket.on("data", (c: Buffer) => reader.push(c));
    socket.on("error", () => {});
    socket.on("close", () => resolve(reason));
  });
}

describe("a rogue worker on the data port", () => {
  it("every bad result is refused, counted by reason and computed again by the real worker; the weights end bit-identical", async () => {
    const runId = "rogue";
    const keys = runKeys(runId);
    const args = ["--redis-url", redis.url, "--run-id", runId, "--metrics-port", "0"];
    const client = new Redis(redis.url);
    const seats = new Queue(SEATS_QUEUE_NAME, { connection: client, prefix: keys.queuePrefix });
    // No step timeout in the way: every retry counted here is the rogue's doing.
    const coord = procs.start(["coordinator", ...RUN, ...args, "--step-timeout", "300"]);
    let worker: CliProcess | undefined;
    let rogue: Rogue | undefined;
    try {
      await waitFor(
        async () => coord.child.exitCode !== null || (await client.exists(keys.spec)) === 1,
        60_000,
      );
      const spec = decodeRunSpec((await client.get(keys.spec))!);
      // Seat jobs with bad data, ahead of the real seats (LIFO): the real
      // worker drops each, then takes a real seat.
      const badSeats: unknown[] = [
        {},
        { session: "zzzzzzzzzzzzzzzz" },
        { session: spec.session, evil: "x" },
        [1, 2, 3],
        JSON.parse(`{"__proto__": {"polluted": true}, "session": "${spec.session}"}`),
      ];
      for (const [i, d] of badSeats.entries()) await seats.add("seat", d, { lifo: true, jobId: `bad-${i}` });
      // A seat of another session (valid data): left quietly.
      await seats.add("seat", { session: "0123456789abcdef" }, { lifo: true, jobId: "other-session" });
      worker = procs.start(["worker", ...args, "--worker-id", "real"]);
      await waitFor(
        () =>
          coord.child.exitCode !== null || /"worker":"real"[^\n]*"msg":"worker joined"/.test(coord.stderr()),
        60_000,
      );
      expect(coord.child.exitCode).toBeNull();
      rogue = new Rogue(spec);
      rogue.dial();
      // Strangers: a wrong token, and a first frame that is no hello.
      const wrong: Hello = { token: "0".repeat(32), session: spec.session, workerId: "stranger" };
      expect(await stranger(spec, encodeControl(FrameType.hello, wrong))).toBe("wrong session or token");
      expect(await stranger(spec, encodeControl(FrameType.result, {}))).toBeUndefined();
      const r = await coord.done;
      rogue.stop();
      expect(r.code, r.stderr).toBe(0);
      const s = r.json!;
      const table = [...rogue.played].map(([k, v]) => `${k}=${v}`).join("; ");
      console.log(
        `[faults] rogue on the data port: ${table}\n[faults] rejectedByReason=${JSON.stringify(s.rejectedByReason)} ` +
          `expected=${JSON.stringify(rogue.expectedByReason)} retriedShards=${s.retriedShards} (expected ${rogue.expectedRetries}) ` +
          `duplicateResults=${s.duplicateResults} (expected ${rogue.expectedDuplicates}) staleResults=${s.staleResults} ` +
          `(expected ${rogue.expectedStale}) samples=${s.samples} sameBits=${s.weightsSha256 === baseline.weightsSha256}`,
      );
      // Every kind was played, several times.
      for (const v of VERDICTS) expect(rogue.played.get(v.name) ?? 0, v.name).toBeGreaterThanOrEqual(2);
      expect(rogue.expectedStale).toBeGreaterThanOrEqual(2);
      expect(rogue.expectedDuplicates).toBeGreaterThanOrEqual(2);
      expect(s.rejectedByReason).toEqual(rogue.expectedByReason);
      expect(s.retriedShards).toBe(rogue.expectedRetries);
      expect(s.duplicateResults).toBe(rogue.expectedDuplicates);
      expect(s.staleResults).toBe(rogue.expectedStale);
      // Each refusal is logged, by what was wrong.
      const stderr = r.stderr;
      const played = (name: string) => rogue!.played.get(name) ?? 0;
      expect(logLines(stderr, "refused a result with the wrong sample counts")).toBe(
        played("wrong sample count"),
      );
      expect(logLines(stderr, "refused a result for shards nobody asked for")).toBe(rogue.wrongRange);
      expect(logLines(stderr, "refused a non-finite result; computing it again")).toBe(
        played("NaN in the gradient") + played("infinite cost"),
      );
      expect(logLines(stderr, "refused a malformed result; dropping the worker")).toBe(
        played("result 8 bytes short") + played("result naming no shards (hi = lo)"),
      );
      expect(logLines(stderr, "dropped a worker connection")).toBe(
        played("a frame type the protocol does not have") + played("a length prefix past any limit"),
      );
      expect(logLines(stderr, "refused a data connection with another session or a wrong token")).toBe(1);
      expect(logLines(stderr, "refused a data connection that did not say hello")).toBe(1);
      expect(s.samples).toBe(EPOCHS * TRAIN);
      expect(s.steps).toBe(STEPS);
      expect(s.weightsSha256).toBe(baseline.weightsSha256);
      // The real worker dropped each bad seat, saying so, and served the run.
      const w = await stopCli(worker);
      expect(w.code, w.stderr).toBe(0);
      expect(logLines(w.stderr, "refused invalid seat job data")).toBe(badSeats.length);
    } finally {
      rogue?.stop();
      if (worker) await stopCli(worker, "SIGKILL");
      await seats.close();
      client.disconnect();
    }
  }, 600_000);
});
