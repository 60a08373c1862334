/**
 * Lanes (`--dispatch lanes`): workers hold a seat for a range of
 * weights versions and claim shards, instead of taking a BullMQ job per shard
 * (docs/design-notes.md, "Lanes"). Against a real Redis and real worker
 * processes: the same bits as one process and as `--dispatch jobs` across
 * several lane ranges and a final batch with empty shards; the claims record
 * who took each shard; a worker that cannot serve the run refuses out loud;
 * the run goes on when every worker is replaced, or the only one holding a
 * lane of the current range is killed.
 */
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LANE_STEPS } from "../src/coordinator/cluster-executor.js";
import { LANES_QUEUE_NAME, runKeys } from "../src/shared/keys.js";
import { type LaneJob, parseNoticeBytes, refusedNotice } from "../src/shared/messages.js";
import { runCli, stopCli, waitFor } from "./helpers/cli.js";
import { makeTinyDataset } from "./helpers/idx.js";
import { startTestRedis, type TestRedis } from "./helpers/redis.js";
import { Tracked } from "./helpers/tracked.js";

// 41 steps per epoch, the last of 3 examples (so one of its 4 shards is
// empty), and 4 epochs: 164 weights versions, three lane ranges of 64.
const BATCH = 64;
const TRAIN = 40 * BATCH + 3;
const EPOCHS = 4;
const RUN = [
  "--train-limit",
  String(TRAIN),
  "--test-limit",
  "500",
  "--epochs",
  String(EPOCHS),
  "--batch",
  String(BATCH),
  "--shards",
  "4",
  // These tests are about lanes; `--dispatch direct` has its own (direct-faults.test.ts).
  "--dispatch",
  "lanes",
  "--json",
];
const VERSIONS = EPOCHS * Math.ceil(TRAIN / BATCH);

const procs = new Tracked();
let redis: TestRedis;
let baseline: Record<string, unknown>;
let tmp: string;

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "gradfleet-lanes-"));
  redis = await startTestRedis();
  const r = await runCli(["train", ...RUN, "--workers", "0"]);
  expect(r.code, r.stderr).toBe(0);
  baseline = r.json!;
  expect(baseline.samples).toBe(EPOCHS * TRAIN);
});

/** The flags that put a process on this file's Redis, in run `runId`. */
function clusterArgs(runId: string): string[] {
  return ["--redis-url", redis.url, "--run-id", runId, "--metrics-port", "0"];
}

const inProcess = new Map<string, Promise<string>>();
/** weightsSha256 of in-process training with `flags` (each set trained once per file). */
function inProcessSha(flags: string[]): Promise<string> {
  const key = flags.join(" ");
  let p = inProcess.get(key);
  if (!p) {
    p = runCli(["train", ...flags, "--workers", "0"]).then((r) => {
      expect(r.code, r.stderr).toBe(0);
      return String(r.json!.weightsSha256);
    });
    inProcess.set(key, p);
  }
  return p;
}

afterAll(async () => {
  await procs.killAll();
  await redis?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe("lanes", () => {
  it("the run spans several lane ranges and a step with an empty shard", () => {
    expect(VERSIONS).toBeGreaterThan(2 * LANE_STEPS);
    expect(TRAIN % BATCH).toBeLessThan(4);
  });

  for (const [dispatch, workers] of [
    ["lanes", 2],
    ["lanes", 3],
    ["jobs", 2],
  ] as const) {
    it(`--dispatch ${dispatch} with ${workers} workers: same bits as one process, nothing retried`, async () => {
      const r = await runCli([
        "train",
        ...RUN,
        "--dispatch",
        dispatch,
        "--workers",
        String(workers),
        "--redis-url",
        redis.url,
      ]);
      expect(r.code, r.stderr).toBe(0);
      const s = r.json!;
      expect(s.weightsSha256).toBe(baseline.weightsSha256);
      expect(s.samples).toBe(EPOCHS * TRAIN);
      expect(s.steps).toBe(VERSIONS);
      expect(s.rejectedResults).toBe(0);
      expect(s.retriedShards).toBe(0);
      expect(s.duplicateResults).toBe(0);
      expect(s.staleResults).toBe(0);
      // Several workers shared the steps.
      expect(Number(s.workersSeen)).toBeGreaterThanOrEqual(2);
    });
  }

  it("each claim names the worker that took the shard; every shard of a step is claimed once", async () => {
    const runId = "claims";
    const keys = runKeys(runId);
    const args = clusterArgs(runId);
    const client = new Redis(redis.url);
    const workers = ["w1", "w2"].map((id) => procs.start(["worker", ...args, "--worker-id", id]));
    const coord = procs.start(["coordinator", "--dispatch", "lanes", ...RUN, ...args]);
    // Claims of the current version, read while the run goes on.
    const seen: Record<string, string>[] = [];
    try {
      await waitFor(async () => {
        const v = await client.get(keys.version);
        if (v !== null) {
          const c = await client.hgetall(keys.claim(Number(v)));
          if (Number(c.n) >= 4) seen.push(c);
        }
        return seen.length >= 5 || coord.child.exitCode !== null;
      }, 60_000);
      const r = await coord.done;
      expect(r.code, r.stderr).toBe(0);
      expect(r.json!.weightsSha256).toBe(baseline.weightsSha256);
      expect(seen.length).toBeGreaterThanOrEqual(5);
      for (const c of seen) {
        // Claims 0..3 take the step's 4 shards, each by a named worker;
        // claims past them (a worker asking for more) take nothing.
        for (let i = 0; i < 4; i++) expect(["w1", "w2"]).toContain(c[String(i)]);
      }
    } finally {
      client.disconnect();
      await Promise.all(workers.map((w) => stopCli(w)));
    }
  });

  it("a worker with other data refuses in its lane; the run stops and names the reason", async () => {
    const runId = "other-data";
    const dirs = [join(tmp, "mine"), join(tmp, "theirs")];
    await Promise.all(dirs.map((d) => mkdir(d)));
    const mine = await makeTinyDataset(dirs[0], { trainN: 256, testN: 32, seed: 1 });
    const theirs = await makeTinyDataset(dirs[1], { trainN: 256, testN: 32, seed: 2 });
    const args = clusterArgs(runId);
    const worker = procs.start(["worker", ...args, "--data", theirs.dir, "--worker-id", "other"]);
    try {
      const r = await procs.run([
        "coordinator",
        "--dispatch",
        "lanes",
        "--data",
        mine.dir,
        "--layers",
        "64,8,4",
        "--batch",
        "32",
        "--shards",
        "2",
        "--epochs",
        "1",
        "--json",
        "--step-timeout",
        "2",
        ...args,
      ]);
      expect(r.code).not.toBe(0);
      // Every live worker refused the run for a whole step timeout.
      expect(r.stderr).toMatch(
        /no live worker can serve this run: the only one \("other"\) refused it \(last reason: data_mismatch\)/,
      );
      const w = await stopCli(worker);
      // The worker said why, with both fingerprints' starts.
      expect(w.stderr).toMatch(/"reason":"data_mismatch"/);
      expect(w.stderr).toMatch(/has fingerprint [0-9a-f]{12}…, the run needs [0-9a-f]{12}…/);
    } finally {
      await stopCli(worker, "SIGKILL");
    }
  });

  it("every worker replaced gracefully mid-run: the new ones take seats at once, nothing is retried", async () => {
    const runId = "replaced";
    const keys = runKeys(runId);
    const flags = [...RUN, "--shards", "2"];
    const refSha = await inProcessSha(flags);
    const args = clusterArgs(runId);
    const client = new Redis(redis.url);
    const first = ["a1", "a2"].map((id) => procs.start(["worker", ...args, "--worker-id", id]));
    const coord = procs.start([
      "coordinator",
      "--dispatch",
      "lanes",
      ...flags,
      ...args,
      // Longer than newcomers take to start on a loaded machine: how fast a
      // process starts is no part of what is tested (no deadline may pass).
      "--step-timeout",
      "60",
    ]);
    try {
      // Past the first range: the lanes of the current range are held, the
      // next range's wait. The leavers complete theirs.
      await waitFor(async () => Number(await client.get(keys.version)) >= LANE_STEPS + 10, 60_000);
      for (const w of first) expect((await stopCli(w, "SIGTERM")).code).toBe(0);
      const second = ["b1", "b2"].map((id) => procs.start(["worker", ...args, "--worker-id", id]));
      const r = await coord.done;
      await Promise.all(second.map((w) => stopCli(w)));
      expect(r.code, r.stderr).toBe(0);
      expect(r.json!.weightsSha256).toBe(refSha);
      expect(r.json!.samples).toBe(EPOCHS * TRAIN);
      // Leavers finished what they claimed and reserved; newcomers needed no deadline.
      expect(r.json!.retriedShards).toBe(0);
      expect(r.json!.workersSeen).toBe(4);
    } finally {
      client.disconnect();
    }
  });

  it("one shard, the lane holder of the current range killed: the worker seated in the next range carries on, same bits", async () => {
    const runId = "holder-killed";
    const keys = runKeys(runId);
    const flags = [...RUN, "--shards", "1"];
    const refSha = await inProcessSha(flags);
    const args = clusterArgs(runId);
    const client = new Redis(redis.url);
    const lanes = new Queue(LANES_QUEUE_NAME, { connection: client, prefix: keys.queuePrefix });
    const ids = ["k1", "k2"];
    const workers = new Map(ids.map((id) => [id, procs.start(["worker", ...args, "--worker-id", id])]));
    const coord = procs.start([
      "coordinator",
      "--dispatch",
      "lanes",
      ...flags,
      ...args,
      "--step-timeout",
      "1",
    ]);
    try {
      // One lane per range: in the second range, one worker holds its lane
      // and the other (having finished the first range's) the third range's,
      // from which it works on the current version too; what the victim had
      // claimed, if anything, goes out again as a shard job.
      let holder: string | undefined;
      await waitFor(async () => {
        const v = Number(await client.get(keys.version));
        if (v < LANE_STEPS + 5) return false;
        for (const job of await lanes.getActive()) {
          const d = job.data as LaneJob;
          if (d.from <= v && v < d.to && job.processedBy) holder = job.processedBy;
        }
        return holder !== undefined;
      }, 60_000);
      const victim = workers.get(holder!)!;
      victim.child.kill("SIGKILL");
      await victim.done;
      const r = await coord.done;
      expect(r.code, r.stderr).toBe(0);
      expect(r.json!.weightsSha256).toBe(refSha);
      expect(r.json!.samples).toBe(EPOCHS * TRAIN);
    } finally {
      await lanes.close();
      client.disconnect();
      await Promise.all([...workers.values()].map((w) => stopCli(w, "SIGKILL")));
    }
  });

  it("a worker still holding an earlier session, given a new one on other data, refuses out loud", async () => {
    const runId = "new-data";
    const dirs = [join(tmp, "first"), join(tmp, "second")];
    await Promise.all(dirs.map((d) => mkdir(d)));
    const a = await makeTinyDataset(dirs[0], { trainN: 256, testN: 32, seed: 3 });
    const b = await makeTinyDataset(dirs[1], { trainN: 256, testN: 32, seed: 4 });
    const args = clusterArgs(runId);
    const model = ["--layers", "64,8,4", "--batch", "32", "--shards", "2", "--epochs", "1", "--json"];
    const worker = procs.start(["worker", ...args, "--data", a.dir, "--worker-id", "w"]);
    try {
      const ok = await procs.run(["coordinator", "--dispatch", "lanes", "--data", a.dir, ...model, ...args]);
      expect(ok.code, ok.stderr).toBe(0);
      // Same run id, other data: the worker still caches the first session.
      const r = await procs.run([
        "coordinator",
        "--dispatch",
        "lanes",
        "--data",
        b.dir,
        ...model,
        ...args,
        "--step-timeout",
        "2",
      ]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/no live worker can serve this run: .*last reason: data_mismatch/);
      const w = await stopCli(worker);
      expect(w.stderr).toMatch(/"reason":"data_mismatch"/);
    } finally {
      await stopCli(worker, "SIGKILL");
    }
  });

  it("a worker with other data does not stop a run that a good worker joining later can serve", async () => {
    const runId = "bad-then-good";
    const dir = join(tmp, "bad");
    await mkdir(dir);
    const bad = await makeTinyDataset(dir, { trainN: 256, testN: 32, seed: 5 });
    const args = clusterArgs(runId);
    // Eight shard-job slots and a lane: still one refusal a second.
    const badWorker = procs.start([
      "worker",
      ...args,
      "--data",
      bad.dir,
      "--worker-id",
      "bad",
      "--concurrency",
      "8",
    ]);
    // A step timeout longer than the good worker takes to start on a loaded
    // machine: how fast a process starts is no part of what is tested.
    const coord = procs.start([
      "coordinator",
      "--dispatch",
      "lanes",
      ...RUN,
      ...args,
      "--step-timeout",
      "30",
    ]);
    let good: ReturnType<typeof procs.start> | undefined;
    try {
      // The bad worker has refused (each refusal sends its shard out again
      // as a shard job, which it would take again if it did not pause).
      await waitFor(() => badWorker.stderr().includes('"reason":"data_mismatch"'), 30_000);
      good = procs.start(["worker", ...args, "--worker-id", "good"]);
      const r = await coord.done;
      expect(r.code, r.stderr).toBe(0);
      expect(r.json!.weightsSha256).toBe(baseline.weightsSha256);
      expect(r.json!.samples).toBe(EPOCHS * TRAIN);
      const refused = (r.json!.rejectedByReason as Record<string, number>).refused_data_mismatch;
      expect(refused).toBeGreaterThanOrEqual(1);
    } finally {
      await stopCli(badWorker, "SIGKILL");
      if (good) await stopCli(good, "SIGKILL");
    }
  });

  it("every worker killed in the last lane range, new ones started: fresh lanes seat them after one deadline", async () => {
    const runId = "killed-last";
    const keys = runKeys(runId);
    const flags = [...RUN, "--shards", "2"];
    const refSha = await inProcessSha(flags);
    const args = clusterArgs(runId);
    const client = new Redis(redis.url);
    const first = ["x1", "x2"].map((id) => procs.start(["worker", ...args, "--worker-id", id]));
    const coord = procs.start([
      "coordinator",
      "--dispatch",
      "lanes",
      ...flags,
      ...args,
      "--step-timeout",
      "1",
    ]);
    let second: ReturnType<typeof procs.start>[] = [];
    try {
      // In the last range there is no next range's lane to take, and the
      // killed workers' lanes stay active until their 30 s locks lapse.
      const lastRange = Math.floor((VERSIONS - 1) / LANE_STEPS) * LANE_STEPS;
      await waitFor(async () => Number(await client.get(keys.version)) >= lastRange + 2, 60_000);
      for (const w of first) w.child.kill("SIGKILL");
      await Promise.all(first.map((w) => w.done));
      second = ["y1", "y2"].map((id) => procs.start(["worker", ...args, "--worker-id", id]));
      const r = await coord.done;
      expect(r.code, r.stderr).toBe(0);
      expect(r.json!.weightsSha256).toBe(refSha);
      expect(r.json!.samples).toBe(EPOCHS * TRAIN);
      // The killed workers' claims, and the first stalled step's shards, went
      // out again; every later step found seated workers (without fresh lanes,
      // each of the ~30 remaining steps would wait for its deadline).
      expect(Number(r.json!.retriedShards)).toBeGreaterThanOrEqual(1);
      expect(Number(r.json!.retriedShards)).toBeLessThan(12);
    } finally {
      client.disconnect();
      await Promise.all(second.map((w) => stopCli(w, "SIGKILL")));
    }
  });
});

describe("refusal notices", () => {
  it("name the worker that cannot serve the run, whatever printable ASCII its id holds", () => {
    for (const id of ["w1", "host:4242", "ok:refused:data_mismatch", "x".repeat(128)]) {
      const n = parseNoticeBytes(Buffer.from(refusedNotice(4294967295, 4095, "data_mismatch", id), "latin1"));
      expect(n).toEqual({
        version: 4294967295,
        shard: 4095,
        kind: "refused",
        reason: "data_mismatch",
        workerId: id,
      });
    }
    // Without an id: a refusal that says nothing about the worker as a whole.
    expect(parseNoticeBytes(Buffer.from(refusedNotice(3, 1, "bad_job")))).toEqual({
      version: 3,
      shard: 1,
      kind: "refused",
      reason: "bad_job",
    });
  });

  it("a worker id outside printable ASCII is refused at the command line", async () => {
    const r = await runCli(["worker", "--worker-id", "wörker", "--dry-run"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--worker-id/);
  });
});
