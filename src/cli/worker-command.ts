/**
 * `gradfleet worker` (`npm run worker`): one worker process; scale by
 * running more. SIGINT/SIGTERM leave the seat (the shards in hand are
 * computed first), then exit.
 */
import type { WorkerOptions } from "../shared/command-options.js";
import { createLogger } from "../shared/log.js";
import { settleWithin } from "../shared/settle-within.js";
import { Trace } from "../shared/trace.js";
import { GradWorker } from "../worker/grad-worker.js";
import { serveWorkerMetrics } from "../worker/metrics.js";

/** Longest a worker takes to stop after SIGINT/SIGTERM (its close waits 10 s for the shards in hand). */
const STOP_LIMIT_MS = 20_000;

/**
 * Set by `train --workers N` in the environment of its local workers: the
 * pid of the train process. Such a worker stops (gracefully) once that
 * process is gone, however it ended (SIGKILL included), instead of serving
 * on for ever.
 */
export const PARENT_PID_ENV = "GRADFLEET_LOCAL_PARENT_PID";
/** How often a local worker looks for its parent. */
const PARENT_CHECK_MS = 1000;

/** Calls `gone` once this process's parent is no longer the train process that started it. */
function watchParent(gone: () => void): void {
  const want = Number(process.env[PARENT_PID_ENV]);
  if (!Number.isSafeInteger(want) || want <= 0) return;
  const timer = setInterval(() => {
    if (process.ppid === want) return;
    clearInterval(timer);
    gone();
  }, PARENT_CHECK_MS);
  timer.unref();
}

/** Runs `worker` until a signal; returns the exit code. */
export async function runWorkerCommand(o: WorkerOptions): Promise<number> {
  const log = createLogger({
    level: o.logLevel,
    format: o.logFormat,
    role: "worker",
    bindings: { run: o.runId, worker: o.workerId },
  });
  // Metrics first: /healthz answers and /readyz says 503 while the dataset loads.
  const metrics = await serveWorkerMetrics(o, log);
  const trace = o.trace ? new Trace(o.trace, `worker ${o.workerId}`) : undefined;
  const worker = new GradWorker({
    trace,
    redisUrl: o.redisUrl,
    redisCa: o.redisCa,
    runId: o.runId,
    dataDir: o.data,
    workerId: o.workerId,
    lockDuration: o.lockSeconds * 1000,
    // Check for stalled seats at least once per lock time, so a lost lock is noticed soon.
    stalledInterval: Math.min(5_000, o.lockSeconds * 1000),
    log,
    observer: metrics?.observer,
  });
  metrics?.attach(worker);
  try {
    await worker.start();
  } catch (e) {
    // E.g. wrong Redis credentials: nothing may keep the process alive.
    await worker.close();
    await metrics?.close();
    throw e;
  }
  const signal = await new Promise<string>((resolve) => {
    process.once("SIGINT", () => resolve("SIGINT"));
    process.once("SIGTERM", () => resolve("SIGTERM"));
    watchParent(() => resolve("parent gone"));
  });
  log.info({ signal, ranges: worker.jobsDone }, "stopping: finishing the shards in hand");
  // close() bounds each of its waits; this bounds the whole, so that a stop
  // signal always ends the process (a second signal ends it at once).
  const closed =
    (await settleWithin(
      worker.close().then(() => true),
      STOP_LIMIT_MS,
    )) === true;
  if (!closed) log.warn({ ms: STOP_LIMIT_MS }, "stopping took too long; exiting anyway");
  await trace?.close();
  await metrics?.close();
  return 0;
}
