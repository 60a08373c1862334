/**
 * `gradfleet train`: trains on this machine. With `--workers 0` every shard
 * is computed in this process; with `--workers N` this process is the
 * coordinator of N local worker processes (a private Redis is started when
 * none answers). Both give the same bits for the same flags.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { runCoordinator } from "../coordinator/coordinator.js";
import { FAST_KERNEL_ENV, fastImplementation } from "../core/kernel.js";
import { LocalExecutor } from "../core/local-executor.js";
import { nativeKernelUnavailable } from "../core/native-kernel.js";
import type { KernelChoice } from "../core/run-config.js";
import { runSession } from "../run/session.js";
import { ensureRedis } from "../shared/local-redis.js";
import { binPath } from "../shared/package-root.js";
import { localRunTargets, writeTargetsFile } from "../shared/prometheus-targets.js";
import { withEventLoopTurns } from "./event-loop.js";
import { type TrainOptions, UsageError } from "./options.js";
import { sessionArgs, withRunPieces } from "./run-pieces.js";
import { trainAndReport } from "./run-report.js";
import { PARENT_PID_ENV } from "./worker-command.js";

/** Runs `train`; returns the exit code. */
export async function runTrainCommand(o: TrainOptions): Promise<number> {
  const runId = o.runId ?? `local-${randomBytes(4).toString("hex")}`;
  applyKernelChoice(o);
  checkMetricsPorts(o);
  checkMinWorkers(o);
  // Local worker i writes its own trace here; they are merged into o.trace at the end.
  const workerTraces = o.trace
    ? Array.from({ length: o.workers }, (_, i) => `${o.trace}.worker-${i + 1}.tmp`)
    : [];
  const cluster = o.workers > 0;
  const how = { role: "train", runId, cluster, traceName: cluster ? "coordinator" : "train" } as const;
  return withRunPieces(o, { ...how, traceParts: workerTraces }, async (run) => {
    if (o.targetsFile) await writeLocalTargets(o, o.targetsFile, runId);
    const report = {
      options: o,
      config: run.config,
      data: run.data,
      stop: run.stop,
      resumeHint: "gradfleet train (same flags)",
    };
    if (!cluster) {
      return trainAndReport({
        ...report,
        train: async (progress) => ({
          outcome: await runSession({
            ...sessionArgs(o, run, progress),
            // In-process steps never wait: give the event loop turns so /metrics, the page and signals are served.
            executor: withEventLoopTurns(new LocalExecutor(run.config, run.data)),
          }),
        }),
      });
    }
    const redis = await ensureRedis(o.redisUrl, o.redisCa, (msg) =>
      process.stderr.write(`gradfleet: ${msg}\n`),
    );
    const workers: ChildProcess[] = [];
    try {
      for (let i = 1; i <= o.workers; i++)
        workers.push(spawnLocalWorker(o, redis.url, runId, i, workerTraces[i - 1]));
      return await trainAndReport({
        ...report,
        train: async (progress) => {
          const { outcome, cluster } = await runCoordinator({
            options: { ...o, runId, redisUrl: redis.url },
            session: sessionArgs(o, run, progress),
            stats: run.stats,
            trace: run.trace,
            onStarted: (executor, client) => run.metrics?.attach(executor, client),
          });
          return { outcome, extraSummary: cluster };
        },
      });
    } finally {
      await Promise.all(workers.map(stopChild));
      await redis.stop();
    }
  });
}

/**
 * `--kernel native` or `wasm`: this process (and train's local workers,
 * which inherit the variable) compute `fast` by that implementation only.
 * Where the addon is not built (no C compiler when `npm run build` ran) or
 * does not load, `native` says so before anything starts, rather than
 * failing in the trainer or in every worker; so does a bad
 * GRADFLEET_FAST_KERNEL.
 */
export function applyKernelChoice(o: { kernel: KernelChoice }): void {
  if (o.kernel === "native" || o.kernel === "wasm") process.env[FAST_KERNEL_ENV] = o.kernel;
  // Checked for `ref` runs too: their epoch-end evaluations use the fast kernel.
  try {
    fastImplementation();
  } catch (e) {
    const message = (e as Error).message;
    if (o.kernel === "native") {
      throw new UsageError(`--kernel native is not available on this machine: ${nativeKernelUnavailable()}`, {
        flag: "--kernel",
      });
    }
    throw new UsageError(message, { flag: "--kernel" });
  }
}

/** `train` starts its own workers: waiting for more than it starts would wait for ever. */
function checkMinWorkers(o: TrainOptions): void {
  if (o.workers > 0 && o.minWorkers > o.workers) {
    throw new UsageError(
      `--min-workers: ${o.minWorkers} is more than the ${o.workers} workers train starts (--workers); the run would never begin`,
      { flag: "--min-workers" },
    );
  }
}

/** Local worker i serves metrics on --metrics-port + i: all of them must be ports, and a targets file needs them. */
function checkMetricsPorts(o: TrainOptions): void {
  if (o.targetsFile && o.metricsPort === 0) {
    throw new UsageError(
      "--targets-file: needs --metrics-port (or GRADFLEET_METRICS_PORT) set to a port, not 0",
      {
        flag: "--targets-file",
      },
    );
  }
  if (o.metricsPort > 0 && o.metricsPort + o.workers > 65535) {
    throw new UsageError(
      `--metrics-port: ${o.metricsPort} leaves no room for ${o.workers} local workers on the ports after it (at most ${65535 - o.workers})`,
      { flag: "--metrics-port" },
    );
  }
}

/** The file_sd targets of this run: the coordinator on --metrics-port, local worker i on --metrics-port + i. */
function writeLocalTargets(o: TrainOptions, path: string, runId: string): Promise<void> {
  const workerPorts = Array.from({ length: o.workers }, (_, i) => o.metricsPort + i + 1);
  return writeTargetsFile(
    path,
    localRunTargets({ host: o.metricsHost, coordinatorPort: o.metricsPort, workerPorts, runId }),
  );
}

/** Starts local worker i as a child process running `gradfleet worker`. */
function spawnLocalWorker(
  o: TrainOptions,
  redisUrl: string,
  runId: string,
  i: number,
  trace: string | undefined,
): ChildProcess {
  const args = [binPath(), "worker", "--redis-url", redisUrl, "--run-id", runId, "--worker-id", `local-${i}`];
  if (o.redisCa) args.push("--redis-ca", o.redisCa);
  if (o.data) args.push("--data", o.data);
  if (trace) args.push("--trace", trace);
  args.push("--metrics-port", String(o.metricsPort ? o.metricsPort + i : 0), "--metrics-host", o.metricsHost);
  args.push("--log-level", o.logLevel === "info" ? "warn" : o.logLevel, "--log-format", o.logFormat);
  // The child reads flags only: clear GRADFLEET_* variables meant for the
  // coordinator. The kernel's implementation is each process's own, and the
  // workers of train --kernel native|wasm compute by the same one.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith("GRADFLEET_") || k === FAST_KERNEL_ENV),
  );
  // The worker stops when this process is gone, however it ends (see worker-command.ts).
  env[PARENT_PID_ENV] = String(process.pid);
  const child = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "inherit"], env });
  child.on("exit", (code, signal) => {
    if (code !== 0 && signal !== "SIGTERM")
      process.stderr.write(`gradfleet: local worker ${i} exited (${signal ?? code})\n`);
  });
  return child;
}

/** SIGTERM (graceful: the worker finishes its shard), then wait for the exit. */
function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}
