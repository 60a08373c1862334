/**
 * Running gradfleet's real CLI in a benchmark: a private redis-server whose
 * pid is known (for its CPU time), separately started `worker` processes
 * (each with its own metrics port, optionally started inside a cgroup), and
 * a `train` or `coordinator` run whose epoch lines the caller can act on as
 * they arrive (to sample CPU times at epoch boundaries).
 *
 * Every model flag is passed explicitly and the children get an environment
 * without the user's GRADFLEET_* and REDIS_URL variables, so what a section
 * measures depends on its own flags only.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { FAST_KERNEL_ENV } from "../src/core/kernel.js";
import { freePort, startPrivateRedis } from "../src/shared/local-redis.js";
import { binPath } from "../src/shared/package-root.js";
import { childPids, procArgs, procComm } from "./proc.js";

/** Training examples of MNIST (the default data set). */
export const MNIST_TRAIN = 60_000;

/** What is trained: sigmoid hidden and output layers, quadratic cost, plain SGD, the fast kernel. */
export interface Model {
  layers: string;
  batch: number;
  shards: number;
  epochs: number;
  /** --train-limit (absent: all of MNIST). */
  trainLimit?: number;
  /** --test-limit: each epoch ends with an evaluation that is not part of any step; keep it small. */
  testLimit: number;
  /** --kernel (default fast: the native addon where built, else WebAssembly). */
  kernel?: "fast" | "native" | "wasm";
}

/** `gradfleet coordinator` for run `runId` of model `m` on `redisUrl`: no metrics, warnings only, JSON results. */
export function coordinatorArgs(redisUrl: string, runId: string, m: Model): string[] {
  return [
    "coordinator",
    "--redis-url",
    redisUrl,
    "--run-id",
    runId,
    ...modelFlags(m),
    "--metrics-port",
    "0",
    "--log-level",
    "warn",
    "--json",
  ];
}

/** The flags of `train` / `coordinator` for a model (the setting: sigmoid + quadratic + SGD). */
export function modelFlags(m: Model): string[] {
  return [
    "--layers",
    m.layers,
    "--activation",
    "sigmoid",
    "--output",
    "sigmoid",
    "--cost",
    "quadratic",
    "--optimizer",
    "sgd",
    "--lr",
    "0.5",
    "--kernel",
    m.kernel ?? "fast",
    "--batch",
    String(m.batch),
    "--shards",
    String(m.shards),
    ...(m.trainLimit === undefined ? [] : ["--train-limit", String(m.trainLimit)]),
    "--test-limit",
    String(m.testLimit),
    "--epochs",
    String(m.epochs),
  ];
}

/** Training examples per epoch of a model. */
export function trainExamples(m: Model): number {
  return m.trainLimit ?? MNIST_TRAIN;
}

/** Steps per epoch of a model (the last one may be a partial batch). */
export function stepsPerEpoch(m: Model): number {
  return Math.ceil(trainExamples(m) / m.batch);
}

/**
 * This process's environment without gradfleet's own variables (flags only
 * count), plus `extra`. GRADFLEET_FAST_KERNEL stays: it picks how every
 * process computes the fast kernel (the same bits), so
 * `GRADFLEET_FAST_KERNEL=wasm npm run bench` measures WebAssembly.
 */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(
      ([k]) => (!k.startsWith("GRADFLEET_") || k === FAST_KERNEL_ENV) && k !== "REDIS_URL",
    ),
  );
  return { ...env, ...extra };
}

/** A private redis-server for a section, with its pid (undefined where /proc cannot tell). */
export interface BenchRedis {
  url: string;
  pid: number | undefined;
  stop(): Promise<void>;
}

/** Starts a private redis-server on a free loopback port and finds its pid among this process's children. */
export async function startBenchRedis(): Promise<BenchRedis> {
  const redis = await startPrivateRedis();
  const port = new URL(redis.url).port;
  // Matched by port too (an earlier section's server may not be reaped yet). redis-server rewrites its
  // command line to "redis-server 127.0.0.1:PORT", so the port is looked for as a word.
  const pid = childPids(process.pid).find(
    (p) => procComm(p) === "redis-server" && new RegExp(`\\b${port}\\b`).test(procArgs(p).join(" ")),
  );
  return { url: redis.url, pid, stop: () => redis.stop() };
}

/** The `--json` summary fields the benchmarks read. */
export interface Summary {
  steps: number;
  samplesPerSecond: number;
  trainSeconds: number;
  /** Per phase (compute, communication, update, total): median and p95 over all steps, ms. */
  stepMs: Record<string, { p50: number; p95: number }>;
  workersSeen?: number;
}

/** What a finished `train` / `coordinator` run printed. */
export interface RunOutput {
  stdout: string;
  summary: Summary;
  wallSeconds: number;
}

/** How to run a gradfleet command. */
export interface RunOptions {
  /** Arguments put before `node`: a wrapper that execs it (e.g. one that joins a cgroup first). */
  wrapper?: string[];
  /**
   * Called when the line of epoch `epoch` arrives on stdout, from the data
   * handler itself (no await in between): sample CPU times here. `pid` is
   * the gradfleet process's (a wrapper execs it, so it keeps the pid).
   */
  onEpoch?: (epoch: number, pid: number) => void;
  /** The run is killed (and reported as failed) after this long. */
  timeoutMs?: number;
}

/**
 * Runs `gradfleet ARGS` (ARGS should include `--json`) to its end.
 * @throws when it fails or prints no summary, with the end of its stderr
 */
export async function runGradfleet(args: string[], o: RunOptions = {}): Promise<RunOutput> {
  const argv = [...(o.wrapper ?? []), process.execPath, binPath(), ...args];
  const started = performance.now();
  const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"], env: childEnv() });
  let stdout = "";
  let stderr = "";
  let epochsSeen = 0;
  child.stdout!.setEncoding("utf8").on("data", (s: string) => {
    stdout += s;
    for (const m of stdout.matchAll(/^epoch (\d+)\/\d+: /gm)) {
      const epoch = Number(m[1]);
      if (epoch > epochsSeen) {
        epochsSeen = epoch;
        o.onEpoch?.(epoch, child.pid!);
      }
    }
  });
  child.stderr!.setEncoding("utf8").on("data", (s: string) => {
    stderr = (stderr + s).slice(-4000);
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), o.timeoutMs ?? 300_000);
  const code = await exited(child);
  clearTimeout(timer);
  const json = stdout
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .pop();
  if (code !== 0 || !json) {
    throw new Error(`\`gradfleet ${args.join(" ")}\` exited with ${code}:\n${stderr.slice(-2000)}`);
  }
  return { stdout, summary: JSON.parse(json) as Summary, wallSeconds: (performance.now() - started) / 1000 };
}

/**
 * Samples/s of epochs 2..E from the CLI's epoch lines, which report the
 * cumulative rate `samples / training seconds` after each epoch (training
 * seconds: the steps' time, no evaluation): epoch k ended at k·n / rate_k
 * training seconds. The first epoch is left out because its first step
 * waits for the workers (to start, or to fetch the run).
 */
export function steadyRate(stdout: string, trainN: number, epochs: number): number {
  const rates = [...stdout.matchAll(/^epoch (\d+)\/\d+: .*, (\d+) samples\/s$/gm)].map((m) => ({
    epoch: Number(m[1]),
    rate: Number(m[2]),
  }));
  const first = rates.find((r) => r.epoch === 1);
  const last = rates.find((r) => r.epoch === epochs);
  if (!first || !last || epochs < 2)
    throw new Error(`no epoch lines for epochs 1 and ${epochs} in:\n${stdout}`);
  const seconds = (epochs * trainN) / last.rate - trainN / first.rate;
  return ((epochs - 1) * trainN) / seconds;
}

/** What a worker's metrics say it did so far. */
export interface WorkerCounters {
  /** Seconds spent computing shards (the kernel), all outcomes. */
  computeSeconds: number;
  /** Shards computed whose result was used. */
  shardsOk: number;
}

/** A separately started `gradfleet worker` process. */
export interface BenchWorker {
  id: string;
  pid: number;
  metricsPort: number;
  /** Reads its /metrics. */
  counters(): Promise<WorkerCounters>;
  /** SIGTERM, then SIGKILL after 10 s; resolves when it has exited. */
  stop(): Promise<void>;
}

/**
 * Starts `gradfleet worker` processes w1..wN for a run id, each with its own
 * metrics port, and resolves once every one answers /readyz (dataset
 * loaded, Redis connected), so that a coordinator started next does not
 * time their start-up. `wrap(i)` gives worker i's wrapper command, if any.
 */
export async function startWorkers(
  n: number,
  o: { redisUrl: string; runId: string; wrap?: (i: number) => string[]; readyTimeoutMs?: number },
): Promise<BenchWorker[]> {
  const workers: SpawnedWorker[] = [];
  try {
    for (let i = 1; i <= n; i++) workers.push(await spawnWorker(i, o));
    await Promise.all(workers.map((w) => waitReady(w, o.readyTimeoutMs ?? 120_000)));
    return workers;
  } catch (e) {
    await Promise.all(workers.map((w) => w.stop()));
    throw e;
  }
}

/** Stops workers (all at once). */
export async function stopWorkers(workers: BenchWorker[]): Promise<void> {
  await Promise.all(workers.map((w) => w.stop()));
}

/** A worker as its starter sees it: with the process, and the end of its stderr for errors. */
type SpawnedWorker = BenchWorker & { child: ChildProcess; stderr: () => string };

async function spawnWorker(
  i: number,
  o: { redisUrl: string; runId: string; wrap?: (i: number) => string[] },
): Promise<SpawnedWorker> {
  const id = `w${i}`;
  // Each its own port: on one host, the default port would be taken by the first worker.
  const metricsPort = await freePort();
  const args = [
    binPath(),
    "worker",
    "--redis-url",
    o.redisUrl,
    "--run-id",
    o.runId,
    "--worker-id",
    id,
    "--metrics-port",
    String(metricsPort),
    "--metrics-host",
    "127.0.0.1",
    "--log-level",
    "warn",
  ];
  const argv = [...(o.wrap?.(i) ?? []), process.execPath, ...args];
  const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "ignore", "pipe"], env: childEnv() });
  let stderr = "";
  child.stderr!.setEncoding("utf8").on("data", (s: string) => {
    stderr = (stderr + s).slice(-4000);
  });
  const gone = exited(child);
  return {
    id,
    pid: child.pid!,
    metricsPort,
    child,
    stderr: () => stderr,
    counters: async () =>
      parseWorkerCounters(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()),
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      child.kill("SIGTERM");
      await gone;
      clearTimeout(timer);
    },
  };
}

/** Polls a worker's /readyz until it answers 200; throws if it exits or the time runs out. */
async function waitReady(w: SpawnedWorker, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (w.child.exitCode !== null || w.child.signalCode !== null) {
      throw new Error(`worker ${w.id} exited (${w.child.signalCode ?? w.child.exitCode}):\n${w.stderr()}`);
    }
    try {
      if ((await fetch(`http://127.0.0.1:${w.metricsPort}/readyz`)).status === 200) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`worker ${w.id} was not ready within ${timeoutMs / 1000} s:\n${w.stderr()}`);
}

/** The counters the benchmarks read from a worker's Prometheus text. */
export function parseWorkerCounters(text: string): WorkerCounters {
  return {
    computeSeconds: promValue(text, "gradfleet_worker_shard_compute_seconds_sum"),
    shardsOk: promValue(text, "gradfleet_worker_shards_total", 'outcome="ok"'),
  };
}

/**
 * The value of the first sample of `name` in Prometheus text whose labels
 * contain `label` (if given); NaN when there is none.
 */
export function promValue(text: string, name: string, label?: string): number {
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== "{" && rest[0] !== " ") continue; // a longer name that starts alike
    const labels = rest[0] === "{" ? rest.slice(1, rest.indexOf("}")) : "";
    if (label && !labels.split(",").includes(label)) continue;
    return Number(rest.slice(rest.lastIndexOf(" ") + 1));
  }
  return Number.NaN;
}

/** Resolves with the exit code (null when killed by a signal) once the child has exited. */
export function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    child.once("exit", (code) => resolve(code));
    // A failed spawn (no such wrapper, say) emits "error" and maybe no "exit".
    child.once("error", () => resolve(null));
  });
}
