/**
 * The overhead benchmark: where a cluster step's CPU goes, per process, and
 * how evenly the workers share the work (issue 12, items 1 and 3).
 *
 * A `coordinator` trains 784-16-16-10 (sigmoid + quadratic, SGD, fast
 * kernel) on all of MNIST for 10 epochs with 1 or 2 separately started
 * `worker` processes, against a private redis-server. The workers are
 * started first and the coordinator only once every worker answers /readyz,
 * so no step waits for a worker to load its data.
 *
 * Figures per run, over epochs 2..10 (the window between the coordinator's
 * first and last epoch lines, when CPU times are sampled):
 * - CPU milliseconds per step of each process (coordinator, redis-server,
 *   each worker), from /proc/<pid>/stat (10 ms ticks; the window holds
 *   seconds of CPU), and, for each worker, the kernel's compute per step
 *   (its gradfleet_worker_shard_compute_seconds, read from its /metrics
 *   before and after; wall time around the kernel call, so CPU time only on
 *   a quiet machine) and the rest of its CPU ("outside the kernel");
 * - the CPU outside the kernel of all processes together (the issue's
 *   target: ≤ 1 ms at batch 4096, 8 shards, one worker);
 * - the coordination overhead p50: step time minus the busiest worker's
 *   compute, as communication p50 + update p50 of the `--json` summary
 *   (target ≤ 1 ms);
 * - evenness: the busiest worker's compute per step against the mean
 *   worker's (target ≤ 1.15), and the mean step against the median step
 *   (target ≤ 1.25). The mean step is the window's training time over its
 *   steps (from the epoch lines; evaluations are not in it); the median is
 *   the summary's stepMs.total.p50.
 *
 * What the summary lacks: it has the busiest worker's compute per step as a
 * median and p95 only, while "busiest vs mean worker" wants its mean over
 * the steps. Until `stepMs.compute.mean` exists the ratio uses the median
 * (it is printed as such); the mean worker's compute per step is the
 * workers' total compute over the steps and the worker count.
 */
import { cpuMs, hasProc } from "./proc.js";
import {
  type BenchOptions,
  fastKernelLine,
  fmt,
  machineLine,
  type Reporter,
  type Section,
} from "./report.js";
import {
  type BenchWorker,
  coordinatorArgs,
  type Model,
  runGradfleet,
  type Summary,
  startBenchRedis,
  startWorkers,
  steadyRate,
  stepsPerEpoch,
  stopWorkers,
  trainExamples,
  type WorkerCounters,
} from "./runs.js";

const LAYERS = "784,16,16,10";
/** The settings: batch 4096 with 8 shards is the case of the ≤ 1 ms target; 2 workers show evenness. */
const CASES = [
  { batch: 4096, shards: 8, workers: 1 },
  { batch: 1024, shards: 4, workers: 1 },
  { batch: 4096, shards: 8, workers: 2 },
  { batch: 1024, shards: 4, workers: 2 },
];
type Case = (typeof CASES)[number];
/** The targets of issue 12, printed beside the figures. */
const TARGET = { outsideKernelMs: 1, overheadMs: 1, busiestOverMean: 1.15, meanOverMedian: 1.25 };

/** CPU ms used so far by each process of a run. */
interface CpuSample {
  coordinator: number;
  redis: number;
  workers: number[];
}

/** What one run measured. */
interface RunResult {
  c: Case;
  steps: number;
  samplesPerSecond: number;
  summary: Summary;
  /** Mean step over the window, ms. */
  meanStepMs: number;
  /** CPU ms per step: coordinator, redis-server, each worker. */
  cpu: CpuSample;
  /** Kernel compute ms per step of each worker. */
  computeMs: number[];
  /** Shards each worker computed with its result used, over the window. */
  shards: number[];
}

export const overheadSection: Section = {
  name: "overhead",
  description:
    "coordinator + separately started workers, 10 epochs: CPU ms per step of each process beside the kernel's compute, overhead, evenness",
  async run(out: Reporter, opts: BenchOptions): Promise<void> {
    const machine = machineLine();
    out.progress(`overhead: ${machine}`);
    if (!hasProc()) out.progress("overhead: no /proc here: CPU per process is not measured (NaN)");
    const cases = opts.quick ? [CASES[0], CASES[2]] : CASES;
    const redis = await startBenchRedis();
    if (redis.pid === undefined)
      out.progress("overhead: redis-server's pid not found: its CPU is not measured");
    const t0 = performance.now();
    const results: RunResult[] = [];
    try {
      for (const [k, c] of cases.entries()) {
        const model: Model = {
          layers: LAYERS,
          batch: c.batch,
          shards: c.shards,
          epochs: opts.quick ? 2 : 10,
          trainLimit: opts.quick ? 8 * c.batch : undefined,
          testLimit: 100,
        };
        const r = await measure(c, model, redis.url, redis.pid, `bench-overhead-${process.pid}-${k}`);
        out.progress(
          `overhead: batch ${c.batch} shards ${c.shards} workers ${c.workers}: ${fmt(r.samplesPerSecond)} samples/s, ` +
            `CPU ms/step coordinator ${fmt(r.cpu.coordinator)}, redis ${fmt(r.cpu.redis)}, ` +
            `workers ${r.cpu.workers.map(fmt).join(" + ")} (kernel ${r.computeMs.map(fmt).join(" + ")})`,
        );
        results.push(r);
      }
    } finally {
      await redis.stop();
    }
    report(out, results, opts, machine, (performance.now() - t0) / 1000);
  },
};

/** One run: start the workers, train with a coordinator, sample CPU and the workers' counters at epochs 1 and E. */
async function measure(
  c: Case,
  model: Model,
  redisUrl: string,
  redisPid: number | undefined,
  runId: string,
): Promise<RunResult> {
  const workers = await startWorkers(c.workers, { redisUrl, runId });
  try {
    const sample = (coordinatorPid: number): CpuSample => ({
      coordinator: cpuMs(coordinatorPid),
      redis: redisPid === undefined ? Number.NaN : cpuMs(redisPid),
      workers: workers.map((w) => cpuMs(w.pid)),
    });
    let cpuFirst: CpuSample | undefined;
    let cpuLast: CpuSample | undefined;
    let countersFirst: Promise<WorkerCounters[]> | undefined;
    const run = await runGradfleet(coordinatorArgs(redisUrl, runId, model), {
      onEpoch: (epoch, pid) => {
        if (epoch === 1) {
          cpuFirst = sample(pid);
          // Read right away: the next epoch's steps go on meanwhile, a shard or two out of hundreds.
          countersFirst = readCounters(workers);
          // Awaited after the run; until then a failed read must not count as an unhandled rejection.
          countersFirst.catch(() => {});
        }
        if (epoch === model.epochs) cpuLast = sample(pid);
      },
    });
    // The workers compute nothing after the last step: their counters can be read after the run.
    const [before, after] = await Promise.all([countersFirst!, readCounters(workers)]);
    const steps = (model.epochs - 1) * stepsPerEpoch(model);
    const perStep = (a: number, b: number) => (b - a) / steps;
    const samplesPerSecond = steadyRate(run.stdout, trainExamples(model), model.epochs);
    return {
      c,
      steps,
      samplesPerSecond,
      summary: run.summary,
      meanStepMs: (trainExamples(model) / samplesPerSecond) * (1000 / stepsPerEpoch(model)),
      cpu: {
        coordinator: perStep(cpuFirst!.coordinator, cpuLast!.coordinator),
        redis: perStep(cpuFirst!.redis, cpuLast!.redis),
        workers: workers.map((_, i) => perStep(cpuFirst!.workers[i], cpuLast!.workers[i])),
      },
      computeMs: workers.map((_, i) => perStep(before[i].computeSeconds, after[i].computeSeconds) * 1000),
      shards: workers.map((_, i) => after[i].shardsOk - before[i].shardsOk),
    };
  } finally {
    await stopWorkers(workers);
  }
}

function readCounters(workers: BenchWorker[]): Promise<WorkerCounters[]> {
  return Promise.all(workers.map((w) => w.counters()));
}

/** The two tables: CPU per process, then step time and evenness. */
function report(
  out: Reporter,
  results: RunResult[],
  opts: BenchOptions,
  machine: string,
  seconds: number,
): void {
  const cpuRows: string[][] = [];
  const stepRows: string[][] = [];
  for (const r of results) {
    const { c } = r;
    const common = {
      section: "overhead",
      layers: LAYERS,
      batch: c.batch,
      shards: c.shards,
      workers: c.workers,
    };
    const cells = [String(c.batch), String(c.shards), String(c.workers)];
    const processes: [string, number, number][] = [
      ["coordinator", r.cpu.coordinator, 0],
      ["redis-server", r.cpu.redis, 0],
      ...r.cpu.workers.map((ms, i): [string, number, number] => [`worker w${i + 1}`, ms, r.computeMs[i]]),
    ];
    for (const [who, ms, kernel] of processes) {
      const process = who.replace("worker ", "");
      out.figure({ ...common, process, metric: "cpu_ms_per_step", value: ms, unit: "ms" });
      if (who.startsWith("worker")) {
        out.figure({ ...common, process, metric: "kernel_compute_ms_per_step", value: kernel, unit: "ms" });
      }
      cpuRows.push([...cells, who, fmt(ms), who.startsWith("worker") ? fmt(kernel) : "", fmt(ms - kernel)]);
    }
    const cpuAll = processes.reduce((a, [, ms]) => a + ms, 0);
    const kernelAll = r.computeMs.reduce((a, b) => a + b, 0);
    const outside = cpuAll - kernelAll;
    out.figure({ ...common, metric: "cpu_ms_per_step_outside_kernel", value: outside, unit: "ms" });
    cpuRows.push([...cells, "all", fmt(cpuAll), fmt(kernelAll), fmt(outside)]);

    const s = r.summary.stepMs;
    const overhead = s.communication.p50 + s.update.p50;
    const meanWorker = kernelAll / c.workers;
    const busiestOverMean = s.compute.p50 / meanWorker;
    const totalsRatio = Math.max(...r.computeMs) / meanWorker;
    const meanOverMedian = r.meanStepMs / s.total.p50;
    out.figure({
      ...common,
      metric: "train_samples_per_second",
      value: r.samplesPerSecond,
      unit: "samples/s",
    });
    out.figure({ ...common, metric: "step_ms_mean", value: r.meanStepMs, unit: "ms" });
    out.figure({ ...common, metric: "step_ms_p50", value: s.total.p50, unit: "ms" });
    out.figure({ ...common, metric: "step_mean_over_median", value: meanOverMedian, unit: "x" });
    out.figure({ ...common, metric: "coordination_overhead_ms_p50", value: overhead, unit: "ms" });
    out.figure({ ...common, metric: "busiest_compute_ms_p50", value: s.compute.p50, unit: "ms" });
    out.figure({ ...common, metric: "mean_worker_compute_ms", value: meanWorker, unit: "ms" });
    out.figure({ ...common, metric: "busiest_p50_over_mean_worker", value: busiestOverMean, unit: "x" });
    out.figure({ ...common, metric: "busiest_total_over_mean_worker", value: totalsRatio, unit: "x" });
    stepRows.push([
      ...cells,
      fmt(r.samplesPerSecond),
      `${fmt(s.total.p50)} / ${fmt(s.total.p95)}`,
      fmt(r.meanStepMs),
      `${fmt(meanOverMedian)}x`,
      fmt(overhead),
      fmt(s.compute.p50),
      fmt(meanWorker),
      c.workers > 1 ? `${fmt(busiestOverMean)}x` : "",
      c.workers > 1 ? `${fmt(totalsRatio)}x` : "",
      r.shards.join(" / "),
    ]);
  }
  const what = opts.quick ? " (--quick: not a measurement)" : "";
  const epochs = opts.quick ? 2 : 10;
  out.table(
    `overhead: CPU ms per step of each process, coordinator + separately started workers, ${LAYERS} ` +
      `sigmoid + quadratic, SGD, ${fastKernelLine()}, all of MNIST, ${epochs} epochs${what}`,
    ["batch", "shards", "workers", "process", "CPU ms/step", "kernel ms/step", "outside kernel"],
    cpuRows,
    [
      `Over epochs 2..${epochs} (CPU sampled from /proc/<pid>/stat, 10 ms ticks, at the coordinator's epoch lines 1 ` +
        `and ${epochs}). kernel = the worker's shard compute (gradfleet_worker_shard_compute_seconds of its /metrics).`,
      "The workers time their kernel calls by the wall clock: on a busy machine that includes waits for a core, " +
        "so kernel ms/step can exceed the CPU and the row outside the kernel comes out too low (even below 0).",
      `"all" outside kernel = the issue's CPU per step outside the kernel (target ≤ ${TARGET.outsideKernelMs} ms ` +
        "at batch 4096, 8 shards, one worker). The coordinator's row includes its epoch-end evaluations " +
        "(--test-limit 100).",
    ],
  );
  out.table(
    `overhead: step time and evenness, same runs${what}`,
    [
      "batch",
      "shards",
      "workers",
      "samples/s",
      "step ms p50/p95",
      "mean step",
      "mean/median",
      "overhead p50",
      "busiest compute p50",
      "mean worker",
      "busiest/mean",
      "totals max/mean",
      "shards per worker",
    ],
    stepRows,
    [
      `mean step = training time / steps over epochs 2..${epochs} (from the epoch lines); step ms p50/p95 from ` +
        `the --json summary (all steps). Target mean/median ≤ ${TARGET.meanOverMedian}.`,
      "overhead p50 = step time minus the busiest worker's compute = communication p50 + update p50 of the " +
        `summary (target ≤ ${TARGET.overheadMs} ms).`,
      "busiest compute p50: the summary's stepMs.compute (per step, the busiest worker's shards one after " +
        "another); mean worker = all workers' kernel compute per step / workers. busiest/mean uses the busiest's " +
        `MEDIAN (the summary has no mean; stepMs.compute.mean would make it exact); target ≤ ${TARGET.busiestOverMean}; ` +
        "left blank for one worker, the busiest by definition.",
      "totals max/mean: the busiest worker's kernel compute over the whole window against the mean worker's " +
        "(shares of the run, not of each step).",
      `Machine: ${machine}. Section took ${seconds.toFixed(0)} s.`,
    ],
  );
}
