/**
 * Fault tests with real worker processes: workers SIGKILLed in the middle of
 * a shard, and a worker frozen (SIGSTOP) past its BullMQ lock time and the
 * coordinator's step deadline. The run must finish with every sample counted
 * exactly once: the same `samples` and `weightsSha256` as a fault-free
 * in-process run of the same flags.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stopCli, waitFor } from "./helpers/cli.js";
import { Fleet } from "./helpers/fleet.js";
import { startTestRedis, type TestRedis } from "./helpers/redis.js";
import { SLOW_BATCH, SLOW_TRAIN, slowRun } from "./helpers/slow-run.js";
import { Tracked } from "./helpers/tracked.js";

// Shards big enough (256 samples through 784-128-64-10 with the reference
// kernel, tens of ms) that a worker is caught computing one, and enough steps
// (48) for several faults however fast, or loaded, the machine is.
const EPOCHS = 6;
const TRAIN = SLOW_TRAIN;
const BATCH = SLOW_BATCH;
// Busy workers are found through the lanes' claims in Redis; direct steps
// have their own fault tests (direct-faults.test.ts).
const RUN = slowRun(EPOCHS, "lanes", 1000);
const SAMPLES = EPOCHS * TRAIN;
const STEPS = EPOCHS * Math.ceil(TRAIN / BATCH);

const procs = new Tracked();
let redis: TestRedis;
let baseline: Record<string, unknown>;

beforeAll(async () => {
  redis = await startTestRedis();
  const r = await procs.run(["train", ...RUN, "--workers", "0"]);
  expect(r.code, r.stderr).toBe(0);
  baseline = r.json!;
  expect(baseline.samples).toBe(SAMPLES);
});

afterAll(async () => {
  await procs.killAll();
  await redis?.stop();
});

describe("worker death", () => {
  it("SIGKILL of a busy worker, several times in one run: same samples, same bits", async () => {
    const runId = "kills";
    const fleet = new Fleet(redis.url, runId, [], (a) => procs.start(a));
    const kills: { version: number; shard: number; midShard: boolean }[] = [];
    const midShard = () => kills.filter((k) => k.midShard).length;
    try {
      await Promise.all([fleet.add(), fleet.add(), fleet.add()]);
      const coord = procs.start([
        "coordinator",
        ...RUN,
        "--redis-url",
        redis.url,
        "--run-id",
        runId,
        "--metrics-port",
        "0",
        "--step-timeout",
        "2",
      ]);
      const running = () => coord.child.exitCode === null;
      // Each kill waits until the previous one's step is done and its replacement is up.
      for (let at = 2; midShard() < 4 && kills.length < 8; at = kills[kills.length - 1].version + 1) {
        await waitFor(async () => !running() || (await fleet.version()) >= at, 60_000);
        const busy = running() ? await fleet.busyWorker({ giveUp: () => !running() }) : undefined;
        if (!busy) break;
        busy.worker.child.kill("SIGKILL");
        await busy.worker.done;
        fleet.remove(busy.worker);
        // Dead before it wrote its result, and the step still waits for it: the shard is orphaned.
        const orphaned =
          (await fleet.version()) === busy.version && !(await fleet.hasResult(busy.version, busy.shard));
        kills.push({ version: busy.version, shard: busy.shard, midShard: orphaned });
        await fleet.add();
        await waitFor(async () => !running() || (await fleet.version()) > busy.version, 60_000);
      }
      const r = await coord.done;
      expect(r.code, r.stderr).toBe(0);
      const s = r.json!;
      console.log(
        `[faults] SIGKILL busy worker: kills=${kills.length} (${midShard()} mid-shard) at ` +
          `${kills.map((k) => `v${k.version}/shard ${k.shard}${k.midShard ? "" : " (result already written)"}`).join(", ")}; ` +
          `retriedShards=${s.retriedShards} duplicateResults=${s.duplicateResults} staleResults=${s.staleResults} ` +
          `workersSeen=${s.workersSeen} samples=${s.samples}/${SAMPLES} (lost ${SAMPLES - Number(s.samples)}) ` +
          `steps=${s.steps}/${STEPS} sameBits=${s.weightsSha256 === baseline.weightsSha256}`,
      );
      expect(midShard()).toBe(4);
      expect(s.samples).toBe(SAMPLES);
      expect(s.steps).toBe(STEPS);
      expect(s.weightsSha256).toBe(baseline.weightsSha256);
      expect(s.rejectedResults).toBe(0);
      // Each orphaned shard was enqueued again (after the 2 s deadline) and computed by another worker.
      expect(Number(s.retriedShards)).toBeGreaterThanOrEqual(midShard());
      expect(Number(s.workersSeen)).toBeGreaterThanOrEqual(4);
    } finally {
      await fleet.close();
    }
  });
});

describe("worker stall", () => {
  it("a worker frozen past its lock and the step deadline: shard recomputed elsewhere, late result dropped and counted", async () => {
    const runId = "stall";
    // A 1 s lock (renewed every 0.5 s while the worker's event loop runs):
    // a frozen worker loses it and BullMQ hands the job to another worker;
    // the coordinator's 1 s step deadline enqueues the shard again too.
    const fleet = new Fleet(redis.url, runId, ["--lock-seconds", "1"], (a) => procs.start(a));
    const freezes: { version: number; progressedTo: number }[] = [];
    try {
      await Promise.all([fleet.add(), fleet.add(), fleet.add()]);
      const coord = procs.start([
        "coordinator",
        ...RUN,
        "--redis-url",
        redis.url,
        "--run-id",
        runId,
        "--metrics-port",
        "0",
        "--step-timeout",
        "1",
      ]);
      const running = () => coord.child.exitCode === null;
      // The next freeze right after the previous one: a fast machine runs the 48 steps in a few seconds.
      let missed = 0;
      for (let at = 2; freezes.length < 2 && missed < 10; at = (freezes.at(-1)?.progressedTo ?? 1) + 1) {
        await waitFor(async () => !running() || (await fleet.version()) >= at, 60_000);
        const busy = running()
          ? await fleet.busyWorker({ giveUp: () => !running(), mustCompute: true })
          : undefined;
        if (!busy) break;
        busy.worker.child.kill("SIGSTOP");
        // A submit already on the wire still lands: then the freeze missed the shard, try again.
        await new Promise((r) => setTimeout(r, 50));
        if ((await fleet.version()) !== busy.version || (await fleet.hasResult(busy.version, busy.shard))) {
          busy.worker.child.kill("SIGCONT");
          missed++;
          continue;
        }
        // Frozen mid-shard (computing, its result not written) for longer than the lock (1 s)
        // and the step deadline (1 s): the run must go on without it.
        const frozenAt = Date.now();
        await waitFor(
          async () =>
            !running() || ((await fleet.version()) > busy.version + 1 && Date.now() - frozenAt > 1_200),
          60_000,
        );
        freezes.push({ version: busy.version, progressedTo: await fleet.version() });
        busy.worker.child.kill("SIGCONT");
      }
      const r = await coord.done;
      expect(r.code, r.stderr).toBe(0);
      const s = r.json!;
      const late = Number(s.staleResults) + Number(s.duplicateResults);
      console.log(
        `[faults] SIGSTOP busy worker past lock and deadline: freezes=${freezes.length} (${missed} missed: result already sent) ` +
          `(${freezes.map((f) => `v${f.version}->v${f.progressedTo} while frozen`).join(", ")}); ` +
          `retriedShards=${s.retriedShards} staleResults=${s.staleResults} duplicateResults=${s.duplicateResults} ` +
          `samples=${s.samples}/${SAMPLES} (lost ${SAMPLES - Number(s.samples)}) sameBits=${s.weightsSha256 === baseline.weightsSha256}`,
      );
      expect(freezes.length).toBe(2);
      // The run went on while the worker was frozen: its shard was computed elsewhere.
      for (const f of freezes) expect(f.progressedTo).toBeGreaterThan(f.version + 1);
      expect(s.samples).toBe(SAMPLES);
      expect(s.steps).toBe(STEPS);
      expect(s.weightsSha256).toBe(baseline.weightsSha256);
      expect(s.rejectedResults).toBe(0);
      // Each frozen worker finished its shard when it woke up; its late result was dropped and counted.
      expect(late).toBeGreaterThanOrEqual(freezes.length);
      // The frozen workers are alive again and still serve (they exit cleanly on SIGTERM).
      for (const w of fleet.live) {
        const exit = await stopCli(w, "SIGTERM");
        expect(exit.code, exit.stderr).toBe(0);
      }
    } finally {
      await fleet.close();
    }
  });
});
