/**
 * The cluster benchmark: samples per second of the real CLI's
 * `train --workers N` (a coordinator and N local worker processes) against
 * a private `redis-server` that this section starts on a free loopback port,
 * for N = 1, 2, 4 at global batch 256 and 1024: 784-16-16-10, sigmoid +
 * quadratic cost, plain SGD, the fast kernel.
 *
 * Steps go over the coordinator's data port (the only dispatch; the
 * Redis-only `lanes` and `jobs` were removed, see the README's figures of
 * earlier sessions). With GRADFLEET_BENCH_BASELINE another build runs
 * interleaved, cell by cell, so the table compares them on the same load.
 *
 * Shards: 4 at both batch sizes, the same for every worker count (the bits
 * must not depend on it): enough for 4 workers to share a step while a
 * shard's compute is small (256 examples: about 0.4 ms). 1024 with 8 shards
 * is measured too, to show what each extra shard costs.
 *
 * Figures per cell:
 * - samples/s in the steady state: the epochs after the first. The first
 *   epoch's first step waits for the worker processes to start and load the
 *   dataset, which the CLI's `samplesPerSecond` (also reported) includes.
 *   The epoch lines the CLI prints carry cumulative samples/s over the
 *   training time, from which each epoch's time is recovered.
 * - speed-up over 1 worker (steady samples/s);
 * - the step time split from the `--json` summary's `stepMs` (all steps):
 *   compute (the busiest worker's: the sum of its shards' compute, as it
 *   measured them; a worker computes its shards one after another),
 *   communication (the rest of the wait for the shards), update (combine +
 *   optimizer), median and p95;
 * - coordination overhead per step = step time minus the busiest worker's
 *   compute = communication + update (reported as the sum of their medians:
 *   the summary has per-phase percentiles only);
 * - CPU milliseconds per step of the coordinator, of all workers together
 *   and of redis-server, over the same epochs (from /proc, sampled when the
 *   CLI prints the epoch lines): unlike wall time, hardly affected by other
 *   processes' load, so it shows what the protocol itself costs;
 * - peak RSS (VmHWM) of the coordinator and of the largest worker, read
 *   from /proc while the processes run (the workers are the train process's
 *   children).
 *
 * Environment:
 * - GRADFLEET_BENCH_BASELINE=/path/to/other/bin/gradfleet.js runs every cell
 *   with that build too (its default dispatch), interleaved with this one,
 *   and adds before/after rows (for measuring a change side by side on a
 *   noisy machine);
 * - GRADFLEET_BENCH_REPS=n runs each cell n times and reports the run with
 *   the median steady samples/s (default 1, to stay within three minutes).
 */
import { spawn } from "node:child_process";
import { startPrivateRedis } from "../src/shared/local-redis.js";
import { binPath } from "../src/shared/package-root.js";
import { childPids, cpuMs, procComm, vmHwm } from "./proc.js";
import {
  type BenchOptions,
  fastKernelLine,
  fmt,
  machineLine,
  median,
  type Reporter,
  type Section,
} from "./report.js";
import { MNIST_TRAIN, modelFlags, steadyRate } from "./runs.js";

const LAYERS = "784,16,16,10";
const WORKERS = [1, 2, 4];
/** Global batch and shards (fixed for every worker count). */
type Cell = { batch: number; shards: number };
/** One `train` run: a cell, a worker count, the data and the epochs. */
interface TrainRun extends Cell {
  workers: number;
  /** --train-limit (null: the full training set). */
  trainLimit: number | null;
  epochs: number;
}
/** The full-data run: memory with all of MNIST loaded, and the throughput of a real epoch. */
const FULL_DATA: Omit<TrainRun, "trainLimit"> & { trainLimit: null } = {
  batch: 1024,
  shards: 4,
  workers: 2,
  trainLimit: null,
  epochs: 2,
};
const CELLS: Cell[] = [
  { batch: 256, shards: 4 },
  { batch: 1024, shards: 4 },
  { batch: 1024, shards: 8 },
];

interface Plan {
  workers: number[];
  /** Training examples per epoch, per batch size. */
  trainLimit: (batch: number) => number;
  epochs: number;
  reps: number;
}
/**
 * 48 steps per epoch and 4 epochs: 144 steady steps per cell, a second or
 * two (fewer were too noisy on a shared machine); the lanes cross ranges.
 */
const FULL: Plan = { workers: WORKERS, trainLimit: (b) => 48 * b, epochs: 4, reps: repsFromEnv() };
const QUICK: Plan = { workers: [1, 2], trainLimit: (b) => 4 * b, epochs: 2, reps: 1 };
/** GRADFLEET_BENCH_REPS: runs per cell (median reported); 1 by default, to stay within a few minutes. */
function repsFromEnv(): number {
  const v = process.env.GRADFLEET_BENCH_REPS;
  if (v === undefined || v === "") return 1;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 20) {
    throw new Error(`GRADFLEET_BENCH_REPS must be an integer from 1 to 20, got "${v}"`);
  }
  return n;
}

/** A run taking longer than this is killed and reported as failed. */
const RUN_TIMEOUT_MS = 120_000;

/** What one `train` run gave. */
interface RunResult {
  /** Steady-state samples/s (epochs after the first). */
  steady: number;
  /** The CLI's samplesPerSecond (all epochs, start-up wait included). */
  cli: number;
  stepMs: Record<string, { p50: number; p95: number }>;
  coordinatorRss: number;
  workerRss: number;
  /** CPU ms per step over epochs 2..E: coordinator, all workers, redis-server. */
  cpuMs: { coordinator: number; workers: number; redis: number };
  workersSeen: number;
  wallSeconds: number;
}

/** A build and the flags it runs with (the dispatch mode). */
type Build = { label: string; bin: string; args: string[] };

export const clusterSection: Section = {
  name: "cluster",
  description:
    "train --workers 1/2/4 on a private redis-server: samples/s, speed-up, step split, overhead, peak RSS",
  async run(out: Reporter, opts: BenchOptions): Promise<void> {
    const plan = opts.quick ? QUICK : FULL;
    const machine = machineLine();
    out.progress(`cluster: ${machine}`);
    const builds: Build[] = [{ label: "direct", bin: binPath(), args: [] }];
    const baseline = process.env.GRADFLEET_BENCH_BASELINE;
    if (baseline) builds.unshift({ label: "baseline", bin: baseline, args: [] });
    const redis = await startPrivateRedis();
    const redisPid = childPids(process.pid).find((pid) => procComm(pid) === "redis-server");
    const t0 = performance.now();
    const results = new Map<string, RunResult>();
    const fullData = new Map<string, RunResult>();
    const key = (b: Build, cell: Cell, workers: number) =>
      `${b.label}/${cell.batch}/${cell.shards}/${workers}`;
    try {
      for (const cell of CELLS) {
        for (const workers of plan.workers) {
          const reps = new Map<string, RunResult[]>();
          // Interleaved, so that a change in the machine's load hits both builds alike.
          for (let rep = 0; rep < plan.reps; rep++) {
            for (const b of builds) {
              const run = { ...cell, workers, trainLimit: plan.trainLimit(cell.batch), epochs: plan.epochs };
              const r = await trainRun(b, redis.url, redisPid, run);
              out.progress(
                `cluster: ${b.label} batch ${cell.batch} workers ${workers}: ${fmt(r.steady)} samples/s steady ` +
                  `(${fmt(r.cli)} with start-up), step p50 ${fmt(r.stepMs.total.p50)} ms, ` +
                  `compute ${fmt(r.stepMs.compute.p50)} ms, CPU ms/step ${fmt(r.cpuMs.coordinator)} + ` +
                  `${fmt(r.cpuMs.workers)} + ${fmt(r.cpuMs.redis)}, run ${r.wallSeconds.toFixed(1)} s`,
              );
              reps.set(b.label, [...(reps.get(b.label) ?? []), r]);
            }
          }
          for (const b of builds) results.set(key(b, cell, workers), medianRun(reps.get(b.label)!));
        }
      }
      if (!opts.quick) {
        for (const b of builds) {
          const r = await trainRun(b, redis.url, redisPid, FULL_DATA);
          out.progress(`cluster: ${b.label} full MNIST: ${fmt(r.steady)} samples/s steady`);
          fullData.set(b.label, r);
        }
      }
    } finally {
      await redis.stop();
    }
    const seconds = (performance.now() - t0) / 1000;
    const rows: string[][] = [];
    for (const b of builds) {
      for (const cell of CELLS) {
        const one = results.get(key(b, cell, plan.workers[0]));
        for (const workers of plan.workers) {
          const r = results.get(key(b, cell, workers))!;
          const speedup = one ? r.steady / one.steady : Number.NaN;
          const overhead = r.stepMs.communication.p50 + r.stepMs.update.p50;
          const common = {
            section: "cluster",
            build: b.label,
            layers: LAYERS,
            batch: cell.batch,
            shards: cell.shards,
            workers,
          };
          out.figure({ ...common, metric: "train_samples_per_second", value: r.steady, unit: "samples/s" });
          out.figure({ ...common, metric: "cli_samples_per_second", value: r.cli, unit: "samples/s" });
          out.figure({ ...common, metric: "speedup_over_1_worker", value: speedup, unit: "x" });
          for (const phase of ["compute", "communication", "update", "total"]) {
            for (const q of ["p50", "p95"] as const) {
              out.figure({
                ...common,
                metric: `step_${phase}_ms_${q}`,
                value: r.stepMs[phase][q],
                unit: "ms",
              });
            }
          }
          out.figure({ ...common, metric: "coordination_overhead_ms_p50", value: overhead, unit: "ms" });
          for (const [who, ms] of Object.entries(r.cpuMs)) {
            out.figure({ ...common, metric: `cpu_ms_per_step_${who}`, value: ms, unit: "ms" });
          }
          out.figure({
            ...common,
            metric: "coordinator_peak_rss_bytes",
            value: r.coordinatorRss,
            unit: "bytes",
          });
          out.figure({ ...common, metric: "worker_peak_rss_bytes", value: r.workerRss, unit: "bytes" });
          const ms = (phase: string) => `${fmt(r.stepMs[phase].p50)} / ${fmt(r.stepMs[phase].p95)}`;
          rows.push([
            ...(builds.length > 1 ? [b.label] : []),
            String(cell.batch),
            String(cell.shards),
            String(workers),
            fmt(r.steady),
            fmt(r.cli),
            `${fmt(speedup)}x`,
            ms("total"),
            ms("compute"),
            ms("communication"),
            ms("update"),
            fmt(overhead),
            `${fmt(r.cpuMs.coordinator)} / ${fmt(r.cpuMs.workers)} / ${fmt(r.cpuMs.redis)}`,
            fmt(r.coordinatorRss / 2 ** 20),
            fmt(r.workerRss / 2 ** 20),
          ]);
        }
      }
    }
    const what = opts.quick ? " (--quick: not a measurement)" : "";
    out.table(
      `cluster: train --workers N, ${LAYERS} sigmoid + quadratic, SGD, ${fastKernelLine()}, private redis-server${what}`,
      [
        ...(builds.length > 1 ? ["build"] : []),
        "batch",
        "shards",
        "workers",
        "samples/s",
        "incl. start",
        "speed-up",
        "step ms p50/p95",
        "compute",
        "communication",
        "update",
        "overhead p50",
        "CPU ms/step c/w/r",
        "coord MB",
        "worker MB",
      ],
      rows,
      [
        `samples/s: epochs 2..${plan.epochs} of ${plan.epochs} (the first epoch waits for the workers to start); ` +
          `"incl. start" is the CLI's samplesPerSecond over all epochs.`,
        `--train-limit ${CELLS.map((c) => plan.trainLimit(c.batch)).join(" / ")} per batch size, ` +
          `${plan.reps} run(s) per cell${plan.reps > 1 ? " (median)" : ""}.`,
        "step ms: median / p95 over all steps of the `--json` summary's stepMs; compute = the busiest " +
          "worker's compute (its shards one after another, as it measured them); communication = the rest " +
          "of the wait for the shards; update = combine + optimizer.",
        "overhead p50 = coordination overhead per step (step time minus the busiest worker's compute) = " +
          "communication p50 + update p50.",
        "build: direct = this build (steps over the coordinator's data port).",
        "CPU ms/step c/w/r: CPU time per step (epochs 2..E) of the coordinator / all workers / redis-server.",
        "coord MB / worker MB: peak RSS (VmHWM) of the coordinator and of the largest worker (MiB).",
        ...(baseline ? [`baseline: ${baseline}; direct: ${binPath()}`] : []),
        `Machine: ${machine}. Section took ${seconds.toFixed(0)} s.`,
      ],
    );
    if (fullData.size) reportFullData(out, fullData, builds.length > 1);
  },
};

/** The full-MNIST run's figures and table: peak RSS with all the data loaded, and a real epoch's rate. */
function reportFullData(out: Reporter, runs: Map<string, RunResult>, labelled: boolean): void {
  const f = FULL_DATA;
  const rows: string[][] = [];
  for (const [label, r] of runs) {
    const common = {
      section: "cluster",
      build: label,
      layers: LAYERS,
      batch: f.batch,
      shards: f.shards,
      workers: f.workers,
      data: "mnist-full",
    };
    out.figure({ ...common, metric: "train_samples_per_second", value: r.steady, unit: "samples/s" });
    out.figure({ ...common, metric: "coordinator_peak_rss_bytes", value: r.coordinatorRss, unit: "bytes" });
    out.figure({ ...common, metric: "worker_peak_rss_bytes", value: r.workerRss, unit: "bytes" });
    rows.push([
      ...(labelled ? [label] : []),
      fmt(r.steady),
      `${fmt(r.stepMs.total.p50)} / ${fmt(r.stepMs.total.p95)}`,
      fmt(r.coordinatorRss / 2 ** 20),
      fmt(r.workerRss / 2 ** 20),
    ]);
  }
  out.table(
    `cluster: full MNIST (${MNIST_TRAIN.toLocaleString("en-US")} training examples), train --workers ${f.workers}, ` +
      `batch ${f.batch}, ${f.shards} shards, ${f.epochs} epochs`,
    [...(labelled ? ["build"] : []), "samples/s", "step ms p50/p95", "coord MB", "worker MB"],
    rows,
    [
      "samples/s: the second epoch. coord MB / worker MB: peak RSS (VmHWM, MiB) of the coordinator and of " +
        "the largest worker, each holding all of MNIST.",
    ],
  );
}

/** The run of a cell with the median steady samples/s. */
function medianRun(runs: RunResult[]): RunResult {
  const m = median(runs.map((r) => r.steady));
  return runs.reduce((best, r) => (Math.abs(r.steady - m) < Math.abs(best.steady - m) ? r : best));
}

/** Runs `gradfleet train --workers N ... --json` and measures it. */
async function trainRun(
  build: Build,
  redisUrl: string,
  redisPid: number | undefined,
  run: TrainRun,
): Promise<RunResult> {
  const { trainLimit, epochs } = run;
  const args = [
    build.bin,
    "train",
    ...build.args,
    "--workers",
    String(run.workers),
    "--redis-url",
    redisUrl,
    ...modelFlags({
      layers: LAYERS,
      batch: run.batch,
      shards: run.shards,
      epochs,
      trainLimit: trainLimit ?? undefined,
      testLimit: 500,
    }),
    "--metrics-port",
    "0",
    "--log-level",
    "warn",
    "--json",
  ];
  const started = performance.now();
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  const rss = new PeakRss(child.pid!);
  // CPU times when epoch 1 and epoch E were reported (the epoch line follows the epoch's evaluation).
  const cpuAt: CpuSample[] = [];
  const lastEpoch = new RegExp(`^epoch ${epochs}/${epochs}: `, "m");
  child.stdout.setEncoding("utf8").on("data", (s: string) => {
    stdout += s;
    if (cpuAt.length === 0 && /^epoch 1\/\d+: /m.test(stdout)) cpuAt.push(cpuSample(child.pid!, redisPid));
    if (cpuAt.length === 1 && lastEpoch.test(stdout)) cpuAt.push(cpuSample(child.pid!, redisPid));
  });
  child.stderr.setEncoding("utf8").on("data", (s: string) => {
    stderr += s;
  });
  const poll = setInterval(() => rss.sample(), 250);
  const timer = setTimeout(() => child.kill("SIGKILL"), RUN_TIMEOUT_MS);
  const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
  clearInterval(poll);
  clearTimeout(timer);
  const wallSeconds = (performance.now() - started) / 1000;
  const json = stdout
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .pop();
  if (code !== 0 || !json) {
    throw new Error(
      `cluster: \`train ${args.slice(2).join(" ")}\` exited with ${code}:\n${stderr.slice(-2000)}`,
    );
  }
  const s = JSON.parse(json) as {
    samplesPerSecond: number;
    stepMs: RunResult["stepMs"];
    workersSeen: number;
  };
  const trainN = trainLimit ?? MNIST_TRAIN;
  const steps = (epochs - 1) * Math.ceil(trainN / run.batch);
  const perStep = (k: keyof CpuSample) =>
    cpuAt.length === 2 ? (cpuAt[1][k] - cpuAt[0][k]) / steps : Number.NaN;
  return {
    steady: steadyRate(stdout, trainN, epochs),
    cpuMs: { coordinator: perStep("coordinator"), workers: perStep("workers"), redis: perStep("redis") },
    cli: s.samplesPerSecond,
    stepMs: s.stepMs,
    coordinatorRss: rss.coordinator,
    workerRss: rss.worker,
    workersSeen: s.workersSeen,
    wallSeconds,
  };
}

/** Peak resident set (VmHWM) of a process and of its child processes, sampled from /proc. */
class PeakRss {
  coordinator = 0;
  private readonly workers = new Map<number, number>();

  constructor(private readonly pid: number) {}

  /** The largest worker's peak. */
  get worker(): number {
    return Math.max(0, ...this.workers.values());
  }

  sample(): void {
    this.coordinator = Math.max(this.coordinator, vmHwm(this.pid));
    for (const child of childPids(this.pid)) {
      this.workers.set(child, Math.max(this.workers.get(child) ?? 0, vmHwm(child)));
    }
  }
}

/** CPU milliseconds (user + system) used so far. */
interface CpuSample {
  coordinator: number;
  workers: number;
  redis: number;
}

function cpuSample(pid: number, redisPid: number | undefined): CpuSample {
  return {
    coordinator: cpuMs(pid),
    // A worker that exits between the listing and the reading counts as 0.
    workers: childPids(pid).reduce((a, c) => a + (cpuMs(c) || 0), 0),
    redis: redisPid === undefined ? Number.NaN : cpuMs(redisPid),
  };
}
