/**
 * Hostile or broken input against a real coordinator process: a rogue
 * client writes each kind of bad result and bad job into the run's keys,
 * and results into another run's keys. Every bad result is refused, counted
 * by reason and its shard recomputed; every bad job is refused by the worker
 * (invalid data logged and dropped, plan mismatches reported); the weights
 * end bit-identical to a fault-free in-process run.
 */
import { Queue, Worker } from "bullmq";
import { Redis } from "ioredis";
import { Packr } from "msgpackr";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadDataset } from "../src/core/data/index.js";
import type { DataBundle } from "../src/core/dataset.js";
import { type Kernel, makeKernel } from "../src/core/kernel.js";
import { shardRanges } from "../src/core/plan.js";
import { epochPermutation } from "../src/core/prng.js";
import { LANES_QUEUE_NAME, QUEUE_NAME, runKeys } from "../src/shared/keys.js";
import {
  encodeResult,
  RESULT_TAG,
  type ResultFrame,
  type ShardJob,
  shardJobSchema,
} from "../src/shared/messages.js";
import { decodeRunSpec, type RunSpec } from "../src/shared/run-spec.js";
import { SUBMIT_RESULT } from "../src/shared/scripts.js";
import { type CliProcess, stopCli, waitFor } from "./helpers/cli.js";
import { startTestRedis, type TestRedis } from "./helpers/redis.js";
import { Tracked } from "./helpers/tracked.js";

const TRAIN = 6000;
const BATCH = 64;
const RUN = [
  "--train-limit",
  String(TRAIN),
  "--test-limit",
  "1000",
  "--epochs",
  "1",
  "--batch",
  String(BATCH),
  "--shards",
  "4",
  "--json",
];
const STEPS = Math.ceil(TRAIN / BATCH);
const RUN_ID = "rogue-results";

const procs = new Tracked();
let redis: TestRedis;
let baseline: Record<string, unknown>;
let data: DataBundle;

beforeAll(async () => {
  redis = await startTestRedis();
  const r = await procs.run(["train", ...RUN, "--workers", "0"]);
  expect(r.code, r.stderr).toBe(0);
  baseline = r.json!;
  expect(baseline.samples).toBe(TRAIN);
  data = await loadDataset({ trainLimit: TRAIN, testLimit: 1000 });
});

afterAll(async () => {
  await procs.killAll();
  await redis?.stop();
});

/** Lines of a process's stderr that contain `text`. */
function linesWith(stderr: string, text: string): number {
  return stderr.split("\n").filter((l) => l.includes(text)).length;
}

/** What a rogue injection sees: the job it hijacks and a well-formed frame for it. */
interface Ctx {
  j: ShardJob;
  spec: RunSpec;
  /** A frame that would pass every check (zero gradient). */
  frame: ResultFrame;
  /** Writes `payload` as the result of (version, shard) through the real submit script. */
  submit(version: number, payload: Uint8Array): Promise<string>;
  cmd: Redis;
}

/**
 * One kind of bad input: `reason` is the rejection reason the coordinator
 * must count (undefined: not counted), `retries` whether the shard is enqueued again.
 */
interface Kind {
  name: string;
  reason?: string;
  retries: boolean;
  inject(c: Ctx): Promise<void>;
}

const plain = new Packr({ useRecords: false, structuredClone: false, moreTypes: false, useFloat32: 0 });

/** A bad result written through SUBMIT_RESULT (it must be accepted as the first write). */
function badResult(name: string, reason: string, bytes: (c: Ctx) => Uint8Array): Kind {
  return {
    name,
    reason,
    retries: true,
    inject: async (c) => {
      expect(await c.submit(c.j.version, bytes(c)), name).toBe("ok");
    },
  };
}

/** Where the gradient blob starts in an encoded frame (it is the last item). */
function gradOffset(bytes: Buffer, paramCount: number): number {
  return bytes.length - paramCount * 4;
}

const KINDS: Kind[] = [
  badResult("random bytes", "decode", () => Buffer.from("definitely not msgpack \u0000\u00ff\u00c1")),
  badResult("empty payload", "decode", () => Buffer.alloc(0)),
  // {"__proto__": {"polluted": true}}: a map, refused before anything is built from it.
  badResult("msgpack map with __proto__", "decode", () =>
    Buffer.concat([
      Buffer.from([0x81, 0xa9]),
      Buffer.from("__proto__"),
      Buffer.from([0x81, 0xa8]),
      Buffer.from("polluted"),
      Buffer.from([0xc3]),
    ]),
  ),
  badResult("msgpackr record extension instead of the frame", "decode", (c) =>
    new Packr({ useRecords: true, structuredClone: true }).pack({
      tag: RESULT_TAG,
      session: c.j.session,
      grad: c.frame.grad,
    }),
  ),
  badResult("extension in place of the gradient", "decode", (c) => {
    const ok = encodeResult(c.frame);
    const at = gradOffset(ok, c.spec.paramCount);
    // bin16 header (0xc5 len len) becomes an ext16 header (0xc8 len len type).
    expect(ok[at - 3]).toBe(0xc5);
    const head = ok.subarray(0, at - 3);
    const len = ok.subarray(at - 2, at);
    return Buffer.concat([head, Buffer.from([0xc8]), len, Buffer.from([0x01]), ok.subarray(at)]);
  }),
  badResult("gradient as a msgpack array of numbers", "decode", (c) =>
    plain.pack([
      RESULT_TAG,
      c.j.session,
      c.j.version,
      c.j.shard,
      "rogue",
      1,
      c.frame.count,
      0,
      Array.from(c.frame.grad.subarray(0, 100)),
    ]),
  ),
  badResult("truncated frame", "decode", (c) => encodeResult(c.frame).subarray(0, 1000)),
  badResult("trailing bytes", "decode", (c) => Buffer.concat([encodeResult(c.frame), Buffer.from([0xc0])])),
  badResult("wrong tag", "decode", (c) =>
    plain.pack([
      "gf-result/0",
      c.j.session,
      c.j.version,
      c.j.shard,
      "rogue",
      1,
      c.frame.count,
      0,
      encodeResult(c.frame).subarray(-c.spec.paramCount * 4),
    ]),
  ),
  badResult("gradient one float short", "bad_length", (c) =>
    encodeResult({ ...c.frame, grad: new Float32Array(c.spec.paramCount - 1) }),
  ),
  badResult("gradient twice as long", "bad_length", (c) =>
    encodeResult({ ...c.frame, grad: new Float32Array(2 * c.spec.paramCount) }),
  ),
  badResult("NaN in the gradient", "non_finite", (c) => {
    const g = new Float32Array(c.spec.paramCount);
    g[c.spec.paramCount >> 1] = Number.NaN;
    return encodeResult({ ...c.frame, grad: g });
  }),
  badResult("+Infinity in the gradient", "non_finite", (c) => {
    const g = new Float32Array(c.spec.paramCount);
    g[0] = Number.POSITIVE_INFINITY;
    return encodeResult({ ...c.frame, grad: g });
  }),
  badResult("NaN cost", "non_finite", (c) => encodeResult({ ...c.frame, cost: Number.NaN })),
  badResult("wrong session id", "spec_mismatch", (c) =>
    encodeResult({ ...c.frame, session: "0123456789abcdef" }),
  ),
  badResult("frame claims another version", "spec_mismatch", (c) =>
    encodeResult({ ...c.frame, version: c.j.version + 1 }),
  ),
  badResult("frame claims another shard", "spec_mismatch", (c) =>
    encodeResult({ ...c.frame, shard: (c.j.shard + 1) % 4 }),
  ),
  badResult("wrong count", "wrong_shard", (c) => encodeResult({ ...c.frame, count: c.frame.count + 1 })),
  badResult("huge count", "wrong_shard", (c) => encodeResult({ ...c.frame, count: 2 ** 40 })),
  {
    name: "forged refusal notice",
    reason: "refused_bad_job",
    retries: true,
    inject: async (c) => {
      await c.cmd.rpush(runKeys(RUN_ID).notices, `${c.j.version}:${c.j.shard}:refused:bad_job`);
    },
  },
  {
    name: "forged ok notice without a result",
    retries: true,
    inject: async (c) => {
      await c.cmd.rpush(runKeys(RUN_ID).notices, `${c.j.version}:${c.j.shard}:ok`);
    },
  },
];

/** Injections that do not take the job over: the true result follows them. */
const NOISE: Kind[] = [
  {
    name: "malformed notices",
    retries: false,
    inject: async (c) => {
      const k = runKeys(RUN_ID).notices;
      const junk = [
        "",
        "x",
        "1:2",
        `${c.j.version}:${c.j.shard}:ok:extra`,
        `-1:${c.j.shard}:ok`,
        `${c.j.version}:99999:ok`,
        "9".repeat(5000),
      ];
      await c.cmd.rpush(k, ...junk);
    },
  },
  {
    name: "results under another run's keys",
    retries: false,
    inject: async (c) => {
      const other = runKeys("other-run");
      const garbage = encodeResult({ ...c.frame, grad: new Float32Array(c.spec.paramCount).fill(1e3) });
      await c.cmd.set(other.version, String(c.j.version));
      const out = await c.cmd.eval(
        SUBMIT_RESULT,
        4,
        other.result(c.j.version, c.j.shard),
        other.version,
        other.notices,
        other.counters,
        String(c.j.version),
        String(c.j.shard),
        garbage,
        "600",
      );
      expect(["ok", "duplicate"]).toContain(out);
    },
  },
];

describe("rogue results", () => {
  it("each kind of bad result is refused, counted by reason and recomputed; the weights end bit-identical", async () => {
    const keys = runKeys(RUN_ID);
    const conn = new Redis(redis.url, { maxRetriesPerRequest: null });
    const cmd = new Redis(redis.url);
    const injected = new Map<string, number>();
    const expectedByReason: Record<string, number> = {};
    let expectedRetries = 0;
    let injectedDuplicates = 0;
    let injectedStale = 0;
    let next = 0;
    let noise = 0;
    let session: { id: string; spec: RunSpec; kernel: Kernel; grad: Float32Array } | undefined;
    const count = (name: string) => injected.set(name, (injected.get(name) ?? 0) + 1);
    // Our own worker (the run's only one), in this process: it computes the
    // true gradients with the core, but for some jobs it first plays the rogue.
    const worker = new Worker(
      QUEUE_NAME,
      async (job) => {
        const j = shardJobSchema.parse(job.data);
        const attempt = Number(String(job.id).split("-").pop());
        if (session?.id !== j.session) {
          const spec = decodeRunSpec((await cmd.get(keys.spec))!);
          session = {
            id: j.session,
            spec,
            kernel: makeKernel(spec.config.kernel, spec.config.spec),
            grad: new Float32Array(spec.paramCount),
          };
        }
        const { spec, kernel } = session;
        const submit = (version: number, payload: Uint8Array) =>
          cmd.eval(
            SUBMIT_RESULT,
            4,
            keys.result(version, j.shard),
            keys.version,
            keys.notices,
            keys.counters,
            String(version),
            String(j.shard),
            Buffer.from(payload),
            "600",
          ) as Promise<string>;
        const zero: ResultFrame = {
          session: j.session,
          version: j.version,
          shard: j.shard,
          workerId: "rogue",
          cost: 1,
          count: j.end - j.start,
          computeSeconds: 0,
          grad: new Float32Array(spec.paramCount),
        };
        const ctx: Ctx = { j, spec, frame: zero, submit, cmd };
        // One shard of every step (never shard 0, never a recompute) gets a bad result instead of the true one.
        if (attempt === 0 && j.shard > 0 && (j.version + j.shard) % 3 === 0) {
          const kind = KINDS[next++ % KINDS.length];
          await kind.inject(ctx);
          count(kind.name);
          if (kind.reason) expectedByReason[kind.reason] = (expectedByReason[kind.reason] ?? 0) + 1;
          if (kind.retries) expectedRetries++;
          return;
        }
        const params = new Float32Array(spec.paramCount);
        new Uint8Array(params.buffer).set((await cmd.getBuffer(keys.weights(j.version)))!);
        const perm = epochPermutation(data.train.n, spec.config.seed, j.epoch);
        const { cost, count: n } = kernel.gradSum(params, data.train, perm, j.start, j.end, session.grad);
        const frame = { ...zero, workerId: "in-test", cost, count: n, grad: session.grad };
        expect(await submit(j.version, encodeResult(frame))).toBe("ok");
        // Noise after the true result: it lands behind it on the notices list.
        if (attempt === 0 && j.shard > 0 && (j.version + j.shard) % 3 === 1) {
          const kind = NOISE[noise++ % NOISE.length];
          await kind.inject(ctx);
          count(kind.name);
        }
        // Shard 0 goes first in its step, so the step cannot end before these land.
        if (attempt === 0 && j.shard === 0 && j.version > 0 && j.version % 10 === 0) {
          const garbage = encodeResult({ ...frame, grad: new Float32Array(spec.paramCount).fill(1e3) });
          expect(await submit(j.version, garbage)).toBe("duplicate");
          injectedDuplicates++;
          count("duplicate result (garbage)");
          expect(
            await submit(
              j.version - 1,
              encodeResult({
                ...frame,
                version: j.version - 1,
                grad: new Float32Array(spec.paramCount).fill(1e3),
              }),
            ),
          ).toBe("stale");
          injectedStale++;
          count("result for an old version (garbage)");
        }
      },
      { connection: conn, prefix: keys.queuePrefix, concurrency: 1 },
    );
    try {
      const r = await procs.run([
        "coordinator",
        ...RUN,
        // The worker above is played through BullMQ shard jobs.
        "--dispatch",
        "jobs",
        "--redis-url",
        redis.url,
        "--run-id",
        RUN_ID,
        "--metrics-port",
        "0",
      ]);
      expect(r.code, r.stderr).toBe(0);
      const s = r.json!;
      const byReason = { ...(s.rejectedByReason as Record<string, number>) };
      // A forged "ok" notice with no result behind it is retried; it is not a result, so it may or may not be counted.
      delete byReason.missing_result;
      const table = [...injected].map(([k, v]) => `${k}=${v}`).join("; ");
      console.log(
        `[faults] rogue results: ${table}\n[faults] rejectedByReason=${JSON.stringify(s.rejectedByReason)} expected=${JSON.stringify(expectedByReason)} ` +
          `retriedShards=${s.retriedShards} (expected ${expectedRetries}) duplicateResults=${s.duplicateResults} staleResults=${s.staleResults} ` +
          `samples=${s.samples}/${TRAIN} sameBits=${s.weightsSha256 === baseline.weightsSha256}`,
      );
      // Every kind was tried several times.
      for (const k of [...KINDS, ...NOISE])
        expect(injected.get(k.name) ?? 0, k.name).toBeGreaterThanOrEqual(2);
      expect(byReason).toEqual(expectedByReason);
      expect(s.retriedShards).toBe(expectedRetries);
      expect(s.duplicateResults).toBe(injectedDuplicates);
      expect(s.staleResults).toBe(injectedStale);
      // Each refused result is logged with its step, shard and reason.
      const resultRejections = Object.entries(expectedByReason)
        .filter(([k]) => !k.startsWith("refused_"))
        .reduce((a, [, v]) => a + v, 0);
      expect(linesWith(r.stderr, '"msg":"refused a result"')).toBe(resultRejections);
      expect(s.samples).toBe(TRAIN);
      expect(s.steps).toBe(STEPS);
      expect(s.weightsSha256).toBe(baseline.weightsSha256);
      // Another run's keys were written, and not touched by this run's cleanup.
      expect(await cmd.exists(runKeys("other-run").version)).toBe(1);
    } finally {
      await worker.close();
      conn.disconnect();
      cmd.disconnect();
    }
  });
});

describe("rogue jobs", () => {
  it("jobs with invalid data or outside the plan are refused by a real worker; the run ends with the same bits", async () => {
    const runId = "rogue-jobs";
    const keys = runKeys(runId);
    const args = ["--redis-url", redis.url, "--run-id", runId, "--metrics-port", "0"];
    const client = new Redis(redis.url);
    const queue = new Queue(QUEUE_NAME, { connection: client, prefix: keys.queuePrefix });
    const lanes = new Queue(LANES_QUEUE_NAME, { connection: client, prefix: keys.queuePrefix });
    // No worker yet: the coordinator publishes step 0 and waits, so the rogue
    // jobs (added LIFO, ahead of the real ones) meet the current version.
    // Shard jobs, so that there are real jobs to copy and to race.
    const coord = procs.start(["coordinator", ...RUN, "--dispatch", "jobs", ...args]);
    let worker: CliProcess | undefined;
    try {
      await waitFor(async () => (await queue.getWaitingCount()) === 4, 30_000);
      const spec = decodeRunSpec((await client.get(keys.spec))!);
      expect(await client.get(keys.version)).toBe("0");
      const real = (await queue.getWaiting())
        .map((j) => j.data as ShardJob)
        .sort((a, b) => a.shard - b.shard);
      const session = spec.session;
      const step3 = shardRanges(TRAIN, BATCH, 4, 3)[0];
      const ok = real[0];
      // Refused as invalid data (schema): logged and dropped, nothing computed.
      const invalid: [string, unknown][] = [
        ["empty object", {}],
        ["missing fields", { session }],
        ["huge version", { ...ok, version: 1e300 }],
        ["huge start beyond 2^31", { ...ok, start: 2 ** 40, end: 2 ** 40 + 16 }],
        ["negative shard", { ...ok, shard: -1 }],
        ["fractional step", { ...ok, step: 0.5 }],
        ["number as a string", { ...ok, version: "0" }],
        ["extra field", { ...ok, evil: "x" }],
        ["prototype key", JSON.parse(`{"__proto__": {"polluted": true}, "session": "${session}"}`)],
        ["end before start", { ...ok, start: 10, end: 5 }],
        ["session not hex", { ...ok, session: "zzzzzzzzzzzzzzzz" }],
        ["array instead of an object", [1, 2, 3]],
        ["null", null],
      ];
      // Valid data, but not a shard of the run: refused with a notice (reason bad_job / spec_mismatch).
      const offPlan: [string, ShardJob, string, boolean][] = [
        // [name, data, reason, pending shard (counted by the coordinator)]
        ["shard outside the plan", { ...ok, shard: 4095 }, "bad_job", false],
        ["range not the shard's", { ...real[2], start: 0, end: 2 ** 31 - 1 }, "bad_job", true],
        ["epoch beyond the run", { ...real[1], epoch: 5 }, "bad_job", true],
        ["in-range huge positions", { ...real[3], start: 2 ** 31 - 3, end: 2 ** 31 - 2 }, "bad_job", true],
        // The samples of step 3 under the version of step 0: the result would
        // be accepted for shard 0 of step 0 unless the worker refuses it.
        [
          "step that does not match the version",
          { ...ok, step: 3, start: step3.start, end: step3.end },
          "bad_job",
          true,
        ],
        ["wrong session", { ...ok, session: "0123456789abcdef" }, "spec_mismatch", true],
      ];
      // A copy of a real job (first added, so processed last of the rogue jobs): computed, the
      // same bits; the real job's result is then a duplicate.
      await queue.add("shard", real[1], { jobId: "replayed", lifo: true });
      // Lane jobs: invalid data is refused; a lane beyond the run is refused
      // (it would hold the worker's seat for nothing); a lane of another
      // session ends quietly (a dead coordinator's leftover).
      const invalidLanes: unknown[] = [
        {},
        { session, from: 5, to: 2 },
        { session, from: -1, to: 3 },
        { session, from: 0, to: 64, evil: "x" },
        { session: "zzzzzzzzzzzzzzzz", from: 0, to: 64 },
        "lane",
      ];
      const beyondRun = [{ session, from: 1_000_000, to: 1_000_064 }];
      let n = 0;
      for (const d of [...invalidLanes, ...beyondRun, { session: "0123456789abcdef", from: 0, to: 64 }])
        await lanes.add("lane", d, { jobId: `rogue-lane-${n++}` });
      for (const [, d] of offPlan) await queue.add("shard", d, { jobId: `offplan-${n++}`, lifo: true });
      for (const [, d] of invalid) await queue.add("shard", d, { jobId: `invalid-${n++}`, lifo: true });
      worker = procs.start(["worker", ...args, "--worker-id", "real"]);
      // More invalid jobs while the run is well under way.
      await waitFor(async () => Number(await client.get(keys.version)) >= 20, 60_000);
      for (const [, d] of invalid) await queue.add("shard", d, { jobId: `late-invalid-${n++}`, lifo: true });
      const r = await coord.done;
      expect(r.code, r.stderr).toBe(0);
      const w = await stopCli(worker, "SIGTERM");
      expect(w.code, w.stderr).toBe(0);
      const s = r.json!;
      const refusedInvalid = linesWith(w.stderr, '"msg":"refused invalid job data"');
      const refusedInvalidLanes = linesWith(w.stderr, '"msg":"refused invalid lane job data"');
      const refusedBeyondRun = linesWith(w.stderr, '"msg":"refused a lane outside the run\'s plan"');
      const refusedBadJob = linesWith(w.stderr, '"reason":"bad_job"');
      const refusedSession = linesWith(w.stderr, '"reason":"spec_mismatch"');
      const expected: Record<string, number> = {};
      for (const [, , reason, pending] of offPlan) {
        if (pending) expected[`refused_${reason}`] = (expected[`refused_${reason}`] ?? 0) + 1;
      }
      console.log(
        `[faults] rogue jobs: invalid data ${2 * invalid.length} (worker refused ${refusedInvalid}); ` +
          `invalid lanes ${invalidLanes.length} (refused ${refusedInvalidLanes}), lanes beyond the run ${beyondRun.length} ` +
          `(refused ${refusedBeyondRun}); off-plan ${offPlan.length} ` +
          `(worker refused bad_job ${refusedBadJob}, spec_mismatch ${refusedSession}); replayed 1; ` +
          `coordinator rejectedByReason=${JSON.stringify(s.rejectedByReason)} retriedShards=${s.retriedShards} ` +
          `duplicateResults=${s.duplicateResults} staleResults=${s.staleResults} samples=${s.samples}/${TRAIN} ` +
          `sameBits=${s.weightsSha256 === baseline.weightsSha256}`,
      );
      expect(refusedInvalid).toBe(2 * invalid.length);
      expect(refusedInvalidLanes).toBe(invalidLanes.length);
      expect(refusedBeyondRun).toBe(beyondRun.length);
      expect(refusedBadJob).toBe(offPlan.filter((o) => o[2] === "bad_job").length);
      expect(refusedSession).toBe(offPlan.filter((o) => o[2] === "spec_mismatch").length);
      expect(s.rejectedByReason).toEqual(expected);
      expect(s.samples).toBe(TRAIN);
      expect(s.steps).toBe(STEPS);
      expect(s.weightsSha256).toBe(baseline.weightsSha256);
      // The replayed job's twin, and the recomputes the refusals asked for, were dropped and counted.
      expect(Number(s.duplicateResults) + Number(s.staleResults)).toBeGreaterThanOrEqual(1);
      // Nothing was built from the prototype key.
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    } finally {
      if (worker) await stopCli(worker, "SIGKILL");
      await stopCli(coord, "SIGKILL");
      await queue.close();
      await lanes.close();
      client.disconnect();
    }
  });
});
