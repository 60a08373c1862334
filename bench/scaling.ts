/**
 * The scaling benchmark: scaling past the machine's cores, emulated (issue
 * 12, item 5). Each worker is an emulated host: its own cgroup with a fixed
 * slice of a core (the cpu controller's quota, cgroup v1 or v2; see
 * bench/cgroup.ts), so that 8 workers on a 2-core machine behave like 8
 * slow machines rather than 8 processes fighting over 2 cores.
 *
 * For 1, 2, 4 and 8 workers: samples/s of a `coordinator` with that many
 * separately started `worker` processes, each started inside its group
 * (through a wrapper that joins the group and then execs node, so data
 * loading is capped too), and the efficiency against N × one worker. The
 * same for PyTorch DDP (bench/torch/torch_ddp.py), each rank joining the
 * same groups through DDP_CGROUP_PREFIX. And one capped worker against
 * `train --workers 0` (all in one process) under the same slice: what the
 * cluster costs a host that has only its slice (goal: ≥ 0.8).
 *
 * Not capped: the coordinator and redis-server (they are not part of the
 * emulated hosts), nor torch's launcher process (it only waits for its
 * ranks). They share the real cores with the groups.
 *
 * Setting: 784-16-16-10, sigmoid + quadratic, SGD, fast kernel, all of
 * MNIST, 8 shards for every worker count (so that 8 workers each get one,
 * and the bits do not depend on the count). gradfleet's samples/s are those
 * of epochs 2..E; E = 2 + N keeps the timed part about as long for every N
 * if the cluster scales. PyTorch's are its timed loop after 20 warm-up steps.
 *
 * Environment: GRADFLEET_BENCH_SLICE (cores per emulated host, default 0.1),
 * GRADFLEET_BENCH_SCALING_BATCH (global batch, default 8192) and
 * GRADFLEET_BENCH_PERIOD_MS (the CFS period, default 100; see cgroup.ts).
 * Needs root (it creates cgroups); says so and skips when it cannot.
 */
import { cpus } from "node:os";
import { CoreSlices, findCpuHierarchy, PERIOD_US } from "./cgroup.js";
import { cpuMs } from "./proc.js";
import {
  type BenchOptions,
  fastKernelLine,
  fmt,
  machineLine,
  type Reporter,
  type Section,
} from "./report.js";
import {
  type BenchRedis,
  coordinatorArgs,
  type Model,
  modelFlags,
  runGradfleet,
  startBenchRedis,
  startWorkers,
  steadyRate,
  stopWorkers,
  trainExamples,
} from "./runs.js";
import { pythonPath, torchProblem, tryTorchDdp } from "./torch.js";

const LAYERS = "784,16,16,10";
const SHARDS = 8;

/** Which worker counts, and how long PyTorch's timed loop lasts. */
interface Plan {
  workers: number[];
  ddpSeconds: number;
  /** --train-limit in batches (undefined: all of MNIST). */
  trainBatches?: number;
}
const FULL: Plan = { workers: [1, 2, 4, 8], ddpSeconds: 8 };
const QUICK: Plan = { workers: [1, 2], ddpSeconds: 1, trainBatches: 4 };

/** One worker count's figures (NaN where a side did not run). */
interface Row {
  workers: number;
  gradfleet: number;
  /** The largest share of a core a worker used over the timed epochs (≤ the slice if the cap holds). */
  workerCores: number;
  ddp: number;
}

export const scalingSection: Section = {
  name: "scaling",
  description:
    "emulated hosts (a cgroup with a slice of a core per worker): 1/2/4/8 workers and DDP ranks, efficiency; one capped worker vs train in one process",
  async run(out: Reporter, opts: BenchOptions): Promise<void> {
    const slice = numberFromEnv("GRADFLEET_BENCH_SLICE", 0.1);
    const batch = numberFromEnv("GRADFLEET_BENCH_SCALING_BATCH", 8192);
    const plan = opts.quick ? QUICK : FULL;
    const hierarchy = findCpuHierarchy();
    if (typeof hierarchy === "string") {
      out.progress(`scaling: skipped: ${hierarchy}`);
      return;
    }
    let slices: CoreSlices;
    try {
      slices = await CoreSlices.create(hierarchy, Math.max(...plan.workers), slice);
    } catch (e) {
      out.progress(`scaling: skipped: ${(e as Error).message}`);
      return;
    }
    const machine = machineLine();
    const torch = torchProblem();
    out.progress(
      `scaling: ${machine}; cgroup v${hierarchy.version} at ${hierarchy.mount}, ${slice} core per host`,
    );
    if (torch) out.progress(`scaling: PyTorch DDP skipped: ${torch}`);
    // Ctrl-C: the children get the signal too; the groups must not outlive the bench.
    const onSignal = () => {
      slices.remove().finally(() => process.exit(130));
    };
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
    const t0 = performance.now();
    const model = (epochs: number): Model => ({
      layers: LAYERS,
      batch,
      shards: SHARDS,
      epochs,
      trainLimit: plan.trainBatches && plan.trainBatches * batch,
      testLimit: 100,
    });
    const rows: Row[] = [];
    let inProcess = Number.NaN;
    let redis: BenchRedis | undefined;
    try {
      redis = await startBenchRedis();
      // One process under the slice: the reference a capped worker is held to.
      const m = model(3);
      const run = await runGradfleet(
        ["train", "--workers", "0", ...modelFlags(m), "--metrics-port", "0", "--log-level", "warn", "--json"],
        { wrapper: slices.wrapper(1) },
      );
      inProcess = steadyRate(run.stdout, trainExamples(m), m.epochs);
      out.progress(`scaling: train --workers 0 under ${slice} core: ${fmt(inProcess)} samples/s`);
      for (const n of plan.workers) {
        const row = await clusterRun(slices, redis.url, n, model(opts.quick ? 2 : 2 + n));
        if (!torch) {
          const say = (line: string) => out.progress(`scaling: ${n} ranks: ${line}`);
          row.ddp = await tryTorchDdp(say, n, batch, plan.ddpSeconds, LAYERS, {
            cgroupPrefix: slices.prefix,
          });
        }
        out.progress(
          `scaling: ${n} worker(s): gradfleet ${fmt(row.gradfleet)} samples/s (a worker used at most ` +
            `${fmt(row.workerCores)} core), PyTorch DDP ${fmt(row.ddp)}`,
        );
        rows.push(row);
      }
    } finally {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      await redis?.stop();
      await slices.remove();
    }
    report(out, {
      rows,
      inProcess,
      slice,
      batch,
      hierarchy: `cgroup v${hierarchy.version} at ${hierarchy.mount}`,
      ddpNote: torch
        ? `PyTorch DDP skipped: ${torch}`
        : `PyTorch through ${pythonPath()}, ${plan.ddpSeconds} s timed`,
      quick: opts.quick,
      machine,
      seconds: (performance.now() - t0) / 1000,
    });
  },
};

/**
 * A coordinator (not capped) with n workers, worker i in group i; samples/s
 * of epochs 2..E and the largest share of a core a worker used meanwhile.
 */
async function clusterRun(slices: CoreSlices, redisUrl: string, n: number, m: Model): Promise<Row> {
  const runId = `bench-scaling-${process.pid}-${n}`;
  const workers = await startWorkers(n, {
    redisUrl,
    runId,
    wrap: (i) => slices.wrapper(i),
    // Loading MNIST on a tenth of a core takes a while.
    readyTimeoutMs: 600_000,
  });
  try {
    const cpuAt: { ms: number[]; at: number }[] = [];
    const run = await runGradfleet(coordinatorArgs(redisUrl, runId, m), {
      onEpoch: (epoch) => {
        if (epoch === 1 || epoch === m.epochs) {
          cpuAt.push({ ms: workers.map((w) => cpuMs(w.pid)), at: performance.now() });
        }
      },
    });
    const [a, b] = cpuAt;
    const workerCores = Math.max(...workers.map((_, i) => (b.ms[i] - a.ms[i]) / (b.at - a.at)));
    return {
      workers: n,
      gradfleet: steadyRate(run.stdout, trainExamples(m), m.epochs),
      workerCores,
      ddp: Number.NaN,
    };
  } finally {
    await stopWorkers(workers);
  }
}

/** The scaling table and its figures. */
function report(
  out: Reporter,
  r: {
    rows: Row[];
    inProcess: number;
    slice: number;
    batch: number;
    hierarchy: string;
    ddpNote: string;
    quick: boolean;
    machine: string;
    seconds: number;
  },
): void {
  const one = r.rows.find((x) => x.workers === 1);
  const common = { section: "scaling", layers: LAYERS, batch: r.batch, shards: SHARDS, slice: r.slice };
  const cells = r.rows.map((x) => {
    const eff = x.gradfleet / (x.workers * (one?.gradfleet ?? Number.NaN));
    const effDdp = x.ddp / (x.workers * (one?.ddp ?? Number.NaN));
    const c = { ...common, workers: x.workers };
    out.figure({
      ...c,
      impl: "gradfleet",
      metric: "train_samples_per_second",
      value: x.gradfleet,
      unit: "samples/s",
    });
    out.figure({ ...c, impl: "gradfleet", metric: "efficiency", value: eff, unit: "x" });
    out.figure({ ...c, impl: "gradfleet", metric: "worker_cores_max", value: x.workerCores, unit: "cores" });
    if (!Number.isNaN(x.ddp)) {
      out.figure({
        ...c,
        impl: "pytorch-ddp",
        metric: "train_samples_per_second",
        value: x.ddp,
        unit: "samples/s",
      });
      out.figure({ ...c, impl: "pytorch-ddp", metric: "efficiency", value: effDdp, unit: "x" });
    }
    return [String(x.workers), fmt(x.gradfleet), fmt(eff), fmt(x.workerCores), fmt(x.ddp), fmt(effDdp)];
  });
  const capped = (one?.gradfleet ?? Number.NaN) / r.inProcess;
  out.figure({
    ...common,
    impl: "gradfleet-in-process",
    metric: "train_samples_per_second",
    value: r.inProcess,
    unit: "samples/s",
  });
  out.figure({ ...common, metric: "one_worker_over_in_process", value: capped, unit: "x" });
  const quota = Math.round(r.slice * PERIOD_US);
  const maxHosts = Math.max(...r.rows.map((x) => x.workers));
  out.table(
    `scaling: emulated hosts, ${r.slice} core each, ${LAYERS} sigmoid + quadratic, SGD, ${fastKernelLine()}, batch ${r.batch}, ` +
      `${SHARDS} shards${r.quick ? " (--quick: not a measurement)" : ""}`,
    [
      "workers / ranks",
      "gradfleet samples/s",
      "efficiency",
      "worker cores max",
      "PyTorch DDP samples/s",
      "efficiency",
    ],
    cells,
    [
      `One capped worker: ${fmt(one?.gradfleet ?? Number.NaN)} samples/s; train --workers 0 in one process under the ` +
        `same slice: ${fmt(r.inProcess)}; ratio ${fmt(capped)} (goal ≥ 0.8).`,
      `Each worker and each DDP rank in its own cgroup (${r.hierarchy}): ${quota} µs of CPU per ${PERIOD_US} µs ` +
        "period. NOT capped: the coordinator and redis-server (not part of the emulated hosts) and torch's " +
        `launcher; they share the machine's ${cpus().length} cores with the hosts (${maxHosts} hosts take ` +
        `${fmt(maxHosts * r.slice)} of them), so a loaded machine starves them and the emulation with them.`,
      "efficiency = samples/s / (N × one worker's). gradfleet: coordinator + N separately started workers, " +
        "epochs 2..E of 2 + N. worker cores max: the most CPU a worker used per second over those epochs (≤ the " +
        `slice when the cap holds). ${r.ddpNote}.`,
      `Machine: ${r.machine}. Section took ${r.seconds.toFixed(0)} s.`,
    ],
  );
}

/** A positive number from the environment, or the default. */
function numberFromEnv(name: string, fallback: number): number {
  const v = process.env[name];
  if (v === undefined || v === "") return fallback;
  const n = Number(v);
  if (!(n > 0)) throw new Error(`${name} must be a number > 0, got "${v}"`);
  return n;
}
