/**
 * The DDP benchmark: `train --workers 2` against PyTorch
 * DistributedDataParallel with 2 processes on the same machine, in the same
 * run (issue 12, item 4; the goal is a ratio ≥ 1.0 in every case).
 *
 * Cases: global batch 1024 and 4096 for 784-16-16-10 and 4096 for
 * 784-128-64-10; sigmoid + quadratic, SGD, `--shards 4`, all of MNIST;
 * gradfleet's fast kernel by each of its implementations (the same bits):
 * WebAssembly (`--kernel wasm`) and, where it is built, the native addon
 * (`--kernel native`, what the default `--kernel fast` runs there), each
 * against the same DDP runs.
 * PyTorch runs bench/torch/torch_ddp.py (gloo, one thread a process, the
 * same model, rank r training on its half of each global batch).
 *
 * Each case runs every side 3 times, interleaved (the order alternating), and
 * reports the best of each, so that a burst of load from other processes
 * does not decide the ratio. gradfleet's samples/s are those of epochs
 * 2..E (the first epoch waits for the workers to start; evaluations are not
 * counted); PyTorch's are its timed loop after 20 warm-up steps. A short
 * calibration run of gradfleet (not reported) sizes E so that its timed
 * part lasts about as long as PyTorch's, whatever the speed.
 *
 * Skipped, in one line, when `python3 -c "import torch"` fails (see
 * bench/torch.ts for which Python).
 */

import { nativeKernelUnavailable } from "../src/core/native-kernel.js";
import { type BenchOptions, fmt, machineLine, type Reporter, type Section } from "./report.js";
import { MNIST_TRAIN, type Model, modelFlags, runGradfleet, startBenchRedis, steadyRate } from "./runs.js";
import { pythonPath, torchProblem, tryTorchDdp } from "./torch.js";

const WORKERS = 2;
const CASES = [
  { layers: "784,16,16,10", batch: 1024 },
  { layers: "784,16,16,10", batch: 4096 },
  { layers: "784,128,64,10", batch: 4096 },
];
const SHARDS = 4;
type Case = (typeof CASES)[number];

/** Repetitions, and how long each side's timed part lasts. */
interface Plan {
  reps: number;
  seconds: number;
}
const FULL: Plan = { reps: 3, seconds: 4 };
const QUICK: Plan = { reps: 1, seconds: 1 };

/** The implementations gradfleet runs with: WebAssembly, and the native addon where it is built. */
type Kernel = "wasm" | "native";

/** Every side's samples/s, run by run. */
interface CaseResult {
  c: Case;
  /** Epochs of each kernel's runs (sized by its calibration run). */
  epochs: Partial<Record<Kernel, number>>;
  gradfleet: Partial<Record<Kernel, number[]>>;
  ddp: number[];
}

export const ddpSection: Section = {
  name: "ddp",
  description: `train --workers ${WORKERS} against PyTorch DDP with ${WORKERS} processes, interleaved, best of 3, and the ratio`,
  async run(out: Reporter, opts: BenchOptions): Promise<void> {
    const problem = torchProblem();
    if (problem) {
      out.progress(`ddp: skipped: ${problem}`);
      return;
    }
    const plan = opts.quick ? QUICK : FULL;
    const machine = machineLine();
    out.progress(`ddp: ${machine}; PyTorch through ${pythonPath()}`);
    const say = (line: string) => out.progress(`ddp: ${line}`);
    const nativeProblem = nativeKernelUnavailable();
    if (nativeProblem) say(`--kernel native rows skipped: ${nativeProblem}`);
    const kernels: Kernel[] = nativeProblem ? ["wasm"] : ["wasm", "native"];
    const redis = await startBenchRedis();
    const t0 = performance.now();
    const results: CaseResult[] = [];
    try {
      for (const c of CASES) {
        const model = (kernel: Kernel, epochs: number): Model => ({
          layers: c.layers,
          batch: c.batch,
          shards: SHARDS,
          epochs,
          testLimit: 100,
          kernel,
        });
        const train = async (kernel: Kernel, epochs: number) => {
          const args = [
            "train",
            "--workers",
            String(WORKERS),
            "--redis-url",
            redis.url,
            ...modelFlags(model(kernel, epochs)),
          ];
          const run = await runGradfleet([...args, "--metrics-port", "0", "--log-level", "warn", "--json"]);
          return steadyRate(run.stdout, MNIST_TRAIN, epochs);
        };
        const r: CaseResult = { c, epochs: {}, gradfleet: {}, ddp: [] };
        for (const k of kernels) {
          // Epochs 2..E should last about plan.seconds at the calibration run's speed.
          r.epochs[k] = opts.quick
            ? 2
            : Math.min(50, 1 + Math.ceil((plan.seconds * (await train(k, 2))) / MNIST_TRAIN));
          r.gradfleet[k] = [];
        }
        for (let rep = 0; rep < plan.reps; rep++) {
          const sides = [
            ...kernels.map((k) => async () => r.gradfleet[k]?.push(await train(k, r.epochs[k] ?? 2))),
            async () => r.ddp.push(await tryTorchDdp(say, WORKERS, c.batch, plan.seconds, c.layers)),
          ];
          if (rep % 2) sides.reverse();
          for (const side of sides) await side();
          const ours = kernels
            .map((k) => `--kernel ${k} ${fmt(r.gradfleet[k]?.[rep] ?? Number.NaN)}`)
            .join(", ");
          out.progress(
            `ddp: ${c.layers} batch ${c.batch} run ${rep + 1}: train --workers ${WORKERS} ${ours} samples/s, ` +
              `PyTorch DDP ${fmt(r.ddp[rep])}`,
          );
        }
        results.push(r);
      }
    } finally {
      await redis.stop();
    }
    const rows = results.flatMap((r) => {
      const bestDdp = bestOf(r.ddp);
      return kernels.map((k) => {
        const runs = r.gradfleet[k] ?? [];
        const best = bestOf(runs);
        const common = {
          section: "ddp",
          layers: r.c.layers,
          batch: r.c.batch,
          shards: SHARDS,
          workers: WORKERS,
          kernel: k,
        };
        out.figure({
          ...common,
          impl: "gradfleet",
          metric: "train_samples_per_second",
          value: best,
          unit: "samples/s",
        });
        if (k === kernels[0]) {
          out.figure({
            ...common,
            impl: "pytorch-ddp",
            metric: "train_samples_per_second",
            value: bestDdp,
            unit: "samples/s",
          });
        }
        out.figure({ ...common, metric: "ratio_gradfleet_over_ddp", value: best / bestDdp, unit: "x" });
        return [
          r.c.layers,
          String(r.c.batch),
          k,
          fmt(best),
          runs.map(fmt).join(" / "),
          fmt(bestDdp),
          r.ddp.map(fmt).join(" / "),
          `${fmt(best / bestDdp)}x`,
        ];
      });
    });
    out.table(
      `ddp: train --workers ${WORKERS} vs PyTorch DDP (gloo, ${WORKERS} processes, one thread each), sigmoid + quadratic, ` +
        `SGD, --shards ${SHARDS}, all of MNIST${opts.quick ? " (--quick: not a measurement)" : ""}`,
      ["layers", "global batch", "kernel", "gradfleet", "its runs", "PyTorch DDP", "its runs", "ratio"],
      rows,
      [
        `samples/s, best of ${plan.reps} interleaved runs each. gradfleet: epochs 2..E of train --workers ${WORKERS} ` +
          `--kernel K on a private redis-server (E sized for about ${plan.seconds} s: ` +
          `${results.map((r) => kernels.map((k) => r.epochs[k]).join("/")).join(", ")}); ` +
          `PyTorch: torch_ddp.py's ${plan.seconds} s after 20 warm-up steps, the same runs for both kernels' rows. ` +
          "ratio = gradfleet / DDP (goal ≥ 1.0).",
        `Machine: ${machine}. Section took ${((performance.now() - t0) / 1000).toFixed(0)} s.`,
      ],
    );
  },
};

/** The largest of the runs that did not fail (NaN when all did). */
function bestOf(runs: number[]): number {
  const ok = runs.filter((x) => !Number.isNaN(x));
  return ok.length ? Math.max(...ok) : Number.NaN;
}
