/**
 * `gradfleet train`: trains on this machine. With `--workers 0` every shard
 * is computed in this process; with `--workers N` this process is the
 * coordinator of N local worker processes (a private Redis is started when
 * none answers). Both give the same bits for the same flags.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { LocalExecutor } from "../core/local-executor.js";
import { runCoordinator } from "../coordinator/coordinator.js";
import { ensureRedis } from "../shared/local-redis.js";
import { createLogger } from "../shared/log.js";
import { binPath } from "../shared/package-root.js";
import type { TrainOptions } from "./options.js";
import { loadRunData, resumeState, runConfigFrom } from "./run-setup.js";
import { trainAndReport } from "./train-run.js";

/** Runs `train`; returns the exit code. */
export async function runTrainCommand(o: TrainOptions): Promise<number> {
  const runId = o.runId ?? `local-${randomBytes(4).toString("hex")}`;
  const log = createLogger({ level: o.logLevel, role: "train", bindings: { run: runId } });
  const config = runConfigFrom(o);
  const data = await loadRunData(o);
  const state = await resumeState(o, config, data);
  const resumeHint = "gradfleet train (same flags)";
  if (o.workers === 0) {
    const { exitCode } = await trainAndReport({
      options: o,
      config,
      data,
      executor: new LocalExecutor(config, data),
      state,
      log,
      resumeHint,
    });
    return exitCode;
  }
  const redis = await ensureRedis(o.redisUrl, (msg) => process.stderr.write(`gradfleet: ${msg}\n`));
  const workers: ChildProcess[] = [];
  try {
    for (let i = 1; i <= o.workers; i++) workers.push(spawnLocalWorker(o, redis.url, runId, i));
    return await runCoordinator({
      options: { ...o, runId, redisUrl: redis.url },
      config,
      data,
      state,
      log,
      resumeHint,
    });
  } finally {
    await Promise.all(workers.map(stopChild));
    await redis.stop();
  }
}

/** Starts local worker i as a child process running `gradfleet worker`. */
function spawnLocalWorker(o: TrainOptions, redisUrl: string, runId: string, i: number): ChildProcess {
  const args = [binPath(), "worker", "--redis-url", redisUrl, "--run-id", runId, "--worker-id", `local-${i}`];
  if (o.redisCa) args.push("--redis-ca", o.redisCa);
  if (o.data) args.push("--data", o.data);
  args.push("--metrics-port", String(o.metricsPort ? o.metricsPort + i : 0), "--metrics-host", o.metricsHost);
  args.push("--log-level", o.logLevel === "info" ? "warn" : o.logLevel);
  // The child reads flags only: clear GRADFLEET_* variables meant for the coordinator.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("GRADFLEET_")));
  const child = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "inherit"], env });
  child.on("exit", (code, signal) => {
    if (code !== 0 && signal !== "SIGTERM") process.stderr.write(`gradfleet: local worker ${i} exited (${signal ?? code})\n`);
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
