/**
 * Direct steps (`--dispatch direct`, the default) with real processes and
 * faults: workers SIGKILLed while they hold a range of a step, a worker
 * frozen (SIGSTOP) past the step deadline, every worker replaced gracefully
 * mid-run, workers that cannot serve the run (other data, or a new session
 * on other data than the one they hold). Every run that finishes must have
 * every sample counted once and the bits of in-process training. Progress is
 * read from the coordinator's log (who joined, who left holding work) or the
 * version it writes to Redis, never from the clock.
 */

import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runKeys } from "../src/shared/keys.js";
import { type CliProcess, logRecords, runCli, stopCli, waitFor } from "./helpers/cli.js";
import { procState } from "./helpers/fleet.js";
import { makeTinyDataset } from "./helpers/idx.js";
import { startTestRedis, type TestRedis } from "./helpers/redis.js";
import { SLOW_TRAIN, slowRun } from "./helpers/slow-run.js";
import { Tracked } from "./helpers/tracked.js";

// Generous test timeouts: these runs take 10 s on a quiet machine and minutes
// on a loaded one; nothing here depends on how long.
// Ranges of 256 samples through 784-128-64-10 with the reference kernel take
// tens of ms, so a killed worker nearly always holds one; 64 steps leave time
// for several faults however fast the machine is.
const EPOCHS = 8;
const TRAIN = SLOW_TRAIN;
const RUN = slowRun(EPOCHS, 500);
const SAMPLES = EPOCHS * TRAIN;

const procs = new Tracked();
let redis: TestRedis;
let baseline: Record<string, unknown>;
let tmp: string;

beforeAll(async () => {
  redis = await startTestRedis();
  tmp = await mkdtemp(join(tmpdir(), "gf-direct-"));
  const r = await procs.run(["train", ...RUN, "--workers", "0"]);
  expect(r.code, r.stderr).toBe(0);
  baseline = r.json!;
  expect(baseline.samples).toBe(SAMPLES);
});

afterAll(async () => {
  await procs.killAll();
  await redis?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

function logLines(p: CliProcess, msg: string): Record<string, unknown>[] {
  return logRecords(p.stderr(), msg);
}

function cluster(runId: string): string[] {
  return ["--redis-url", redis.url, "--run-id", runId, "--metrics-port", "0"];
}

describe("direct steps under faults", () => {
  it("workers SIGKILLed while holding a range: it goes to another at once; same samples, same bits", async () => {
    const args = cluster("direct-kills");
    let n = 0;
    const worker = () => procs.start(["worker", ...args, "--worker-id", `w${++n}`]);
    const workers = [worker(), worker(), worker()];
    const coord = procs.start(["coordinator", ...RUN, ...args, "--step-timeout", "30"]);
    const running = () => coord.child.exitCode === null;
    const joined = () => logLines(coord, "worker joined").length;
    let kills = 0;
    for (let want = 3; kills < 3; want++) {
      await waitFor(() => !running() || joined() >= want, 60_000);
      if (!running()) break;
      const victim = workers.shift()!;
      victim.child.kill("SIGKILL");
      await victim.done;
      kills++;
      workers.push(worker());
    }
    const r = await coord.done;
    expect(r.code, r.stderr).toBe(0);
    const s = r.json!;
    // Left while holding work: the coordinator logs those at warn level (40).
    const heldWork = logLines(coord, "worker left").filter((l) => l.level === 40).length;
    console.log(
      `[faults] direct SIGKILL: kills=${kills} (${heldWork} holding a range) retriedShards=${s.retriedShards} ` +
        `workersSeen=${s.workersSeen} samples=${s.samples}/${SAMPLES} sameBits=${s.weightsSha256 === baseline.weightsSha256}`,
    );
    expect(kills).toBe(3);
    expect(heldWork).toBeGreaterThanOrEqual(1);
    expect(Number(s.retriedShards)).toBeGreaterThanOrEqual(heldWork);
    expect(s.samples).toBe(SAMPLES);
    expect(s.weightsSha256).toBe(baseline.weightsSha256);
    expect(s.rejectedResults).toBe(0);
    await Promise.all(workers.map((w) => stopCli(w)));
  }, 600_000);

  it("a worker frozen past the step deadline: its range is computed elsewhere, its late result dropped and counted", async () => {
    const args = cluster("direct-stall");
    const workers = ["a", "b"].map((id) => procs.start(["worker", ...args, "--worker-id", id]));
    const coord = procs.start(["coordinator", ...RUN, ...args, "--step-timeout", "1"]);
    const running = () => coord.child.exitCode === null;
    await waitFor(() => !running() || logLines(coord, "worker joined").length >= 2, 60_000);
    workers[0].child.kill("SIGSTOP");
    // The step it holds (or the next, which it is given) passes its deadline.
    await waitFor(
      () => !running() || logLines(coord, "shards overdue (--step-timeout); sending them again").length >= 1,
      60_000,
    );
    workers[0].child.kill("SIGCONT");
    const r = await coord.done;
    expect(r.code, r.stderr).toBe(0);
    const s = r.json!;
    const late = Number(s.staleResults) + Number(s.duplicateResults);
    console.log(
      `[faults] direct SIGSTOP past the deadline: retriedShards=${s.retriedShards} late=${late} ` +
        `samples=${s.samples}/${SAMPLES} sameBits=${s.weightsSha256 === baseline.weightsSha256}`,
    );
    expect(Number(s.retriedShards)).toBeGreaterThanOrEqual(1);
    // The frozen worker finished its range when it woke: dropped as stale or duplicate, counted.
    expect(late).toBeGreaterThanOrEqual(1);
    expect(s.samples).toBe(SAMPLES);
    expect(s.weightsSha256).toBe(baseline.weightsSha256);
    expect(s.rejectedResults).toBe(0);
    for (const w of workers) {
      const exit = await stopCli(w, "SIGTERM");
      expect(exit.code, exit.stderr).toBe(0);
    }
  }, 600_000);
});

describe("direct steps and workers that cannot serve the run", () => {
  // `--dispatch direct` is still accepted (the only dispatch left), for existing scripts.
  const tiny = ["--layers", "64,8,4", "--batch", "32", "--shards", "2", "--dispatch", "direct", "--json"];

  it("a worker with other data says so on the data port; the run stops and names the reason", async () => {
    const dirs = [join(tmp, "mine"), join(tmp, "theirs")];
    await Promise.all(dirs.map((d) => mkdir(d)));
    const mine = await makeTinyDataset(dirs[0], { trainN: 256, testN: 32, seed: 1 });
    const theirs = await makeTinyDataset(dirs[1], { trainN: 256, testN: 32, seed: 2 });
    const args = cluster("direct-other-data");
    const worker = procs.start(["worker", ...args, "--data", theirs.dir, "--worker-id", "other"]);
    const r = await procs.run([
      "coordinator",
      "--data",
      mine.dir,
      ...tiny,
      "--epochs",
      "1",
      "--step-timeout",
      "2",
      ...args,
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/a worker cannot serve this run: dataset .* has fingerprint/);
    expect(r.stderr).toMatch(
      /no live worker can serve this run: the only one \("other"\) refused it \(last reason: data_mismatch\)/,
    );
    const w = await stopCli(worker);
    expect(w.stderr).toMatch(/"reason":"data_mismatch"/);
  });

  it("a worker with other data does not stop a run that a good worker joining later serves", async () => {
    const dirs = [join(tmp, "good"), join(tmp, "bad")];
    await Promise.all(dirs.map((d) => mkdir(d)));
    const good = await makeTinyDataset(dirs[0], { trainN: 256, testN: 32, seed: 3 });
    const bad = await makeTinyDataset(dirs[1], { trainN: 256, testN: 32, seed: 4 });
    const args = cluster("direct-late-good");
    const flags = ["--data", good.dir, ...tiny, "--epochs", "3"];
    const ref = await procs.run(["train", ...flags, "--workers", "0"]);
    expect(ref.code, ref.stderr).toBe(0);
    const badWorker = procs.start(["worker", ...args, "--data", bad.dir, "--worker-id", "bad"]);
    // A long step timeout: the good worker must be counted however slowly it starts.
    const coord = procs.start(["coordinator", ...flags, ...args, "--step-timeout", "20"]);
    await waitFor(
      () => /a worker cannot serve this run/.test(coord.stderr()) || coord.child.exitCode !== null,
      60_000,
    );
    const goodWorker = procs.start(["worker", ...args, "--data", good.dir, "--worker-id", "good"]);
    const r = await coord.done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.json!.weightsSha256).toBe(ref.json!.weightsSha256);
    expect(r.json!.workersSeen).toBe(1);
    await Promise.all([stopCli(badWorker), stopCli(goodWorker)]);
  });
});

describe("seats", () => {
  it("every worker replaced gracefully mid-run: the newcomers take over, nothing is sent again, same bits", async () => {
    const runId = "direct-replaced";
    const args = cluster(runId);
    const keys = runKeys(runId);
    // The slow run (64 steps of tens of ms): the workers leave at version 10
    // of 64, seconds before the run could end without the newcomers.
    const ref = baseline;
    const client = new Redis(redis.url);
    const first = ["a1", "a2"].map((id) => procs.start(["worker", ...args, "--worker-id", id]));
    // Longer than newcomers take to start on a loaded machine: how fast a
    // process starts is no part of what is tested (no deadline may pass).
    // Both first workers in the run from its first step, however long either
    // takes to load MNIST (the summary counts four workers).
    const coord = procs.start(["coordinator", ...RUN, ...args, "--step-timeout", "60", "--min-workers", "2"]);
    try {
      await waitFor(
        async () => coord.child.exitCode !== null || Number(await client.get(keys.version)) >= 10,
        120_000,
      );
      expect(coord.child.exitCode).toBeNull();
      // Leaving, each computes what it was sent and is released: no range is
      // sent again. Both at once: once both have said so, nothing more goes
      // to either, so the newcomers get the rest of the run.
      const left = await Promise.all(first.map((w) => stopCli(w, "SIGTERM")));
      for (const l of left) expect(l.code).toBe(0);
      const second = ["b1", "b2"].map((id) => procs.start(["worker", ...args, "--worker-id", id]));
      const r = await coord.done;
      await Promise.all(second.map((w) => stopCli(w)));
      expect(r.code, r.stderr).toBe(0);
      expect(r.json!.weightsSha256).toBe(ref.weightsSha256);
      expect(r.json!.samples).toBe(ref.samples);
      expect(r.json!.retriedShards).toBe(0);
      expect(r.json!.workersSeen).toBe(4);
    } finally {
      client.disconnect();
    }
  }, 600_000);

  it("a worker still holding an earlier session, given a new one on other data, refuses out loud, naming itself", async () => {
    const dirs = [join(tmp, "first"), join(tmp, "second")];
    await Promise.all(dirs.map((d) => mkdir(d)));
    const a = await makeTinyDataset(dirs[0], { trainN: 256, testN: 32, seed: 5 });
    const b = await makeTinyDataset(dirs[1], { trainN: 256, testN: 32, seed: 6 });
    const args = cluster("direct-new-data");
    const model = ["--layers", "64,8,4", "--batch", "32", "--shards", "2", "--epochs", "1", "--json"];
    // Any printable ASCII: the id travels in the refusal and in the coordinator's verdict.
    const id = 'w:refused:"data_mismatch"';
    const worker = procs.start(["worker", ...args, "--data", a.dir, "--worker-id", id]);
    const ok = await procs.run(["coordinator", "--data", a.dir, ...model, ...args]);
    expect(ok.code, ok.stderr).toBe(0);
    // Same run id, other data: the worker still holds the first session.
    const r = await procs.run(["coordinator", "--data", b.dir, ...model, ...args, "--step-timeout", "2"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(
      `no live worker can serve this run: the only one (${JSON.stringify(id)}) refused it (last reason: data_mismatch)`,
    );
    const w = await stopCli(worker);
    expect(w.stderr).toMatch(/"reason":"data_mismatch"/);
  });

  it("a worker id outside printable ASCII is refused at the command line", async () => {
    const r = await runCli(["worker", "--worker-id", "wörker", "--dry-run"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--worker-id/);
  });
});

describe("lease", () => {
  it("a coordinator paused past its lease stops at once when it wakes; the one that took the run finishes it", async () => {
    const args = cluster("direct-lease");
    const flags = [
      "--train-limit",
      "6000",
      "--test-limit",
      "500",
      "--batch",
      "64",
      "--shards",
      "4",
      "--epochs",
      "3",
      "--json",
    ];
    const ref = await procs.run(["train", ...flags, "--workers", "0"]);
    expect(ref.code, ref.stderr).toBe(0);
    const worker = procs.start(["worker", ...args, "--worker-id", "w"]);
    const a = procs.start(["coordinator", ...flags, ...args]);
    await waitFor(() => logLines(a, "worker joined").length >= 1 || a.child.exitCode !== null, 60_000);
    expect(a.child.exitCode).toBeNull();
    a.child.kill("SIGSTOP");
    // B waits for A's lease to lapse (5 s without renewal), then takes the run.
    const b = procs.start(["coordinator", ...flags, ...args]);
    await waitFor(
      () => logLines(b, "run published; waiting for workers").length >= 1 || b.child.exitCode !== null,
      60_000,
    );
    a.child.kill("SIGCONT");
    const ra = await a.done;
    expect(ra.code).not.toBe(0);
    expect(ra.stderr).toMatch(/lost the run's lease to another coordinator/);
    const rb = await b.done;
    expect(rb.code, rb.stderr).toBe(0);
    expect(rb.json!.weightsSha256).toBe(ref.json!.weightsSha256);
    expect(rb.json!.samples).toBe(ref.json!.samples);
    await stopCli(worker);
  }, 600_000);
});

describe("local workers", () => {
  it("train --workers 2 killed with SIGKILL: its workers stop by themselves", async () => {
    const train = procs.start(["train", ...RUN, "--workers", "2", "--redis-url", redis.url]);
    await waitFor(
      () => logLines(train, "worker joined").length >= 2 || train.child.exitCode !== null,
      120_000,
    );
    expect(train.child.exitCode).toBeNull();
    const pid = train.child.pid!;
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
      .trim()
      .split(/\s+/)
      .map(Number);
    expect(children.length).toBeGreaterThanOrEqual(2);
    train.child.kill("SIGKILL");
    await train.done;
    // Nothing but the parent's death tells them: they notice it and leave.
    await waitFor(() => children.every((c) => procState(c) === undefined || procState(c) === "Z"), 60_000);
  }, 600_000);
});
