/**
 * `gradfleet worker` (`npm run worker`): one worker process; scale by
 * running more. SIGINT/SIGTERM finish the shard in hand, then exit.
 */
import type { WorkerOptions } from "../cli/options.js";
import { createLogger } from "../shared/log.js";
import { GradWorker } from "./grad-worker.js";
import { serveWorkerMetrics } from "./metrics.js";

/** Runs `worker` until a signal; returns the exit code. */
export async function runWorkerCommand(o: WorkerOptions): Promise<number> {
  const log = createLogger({
    level: o.logLevel,
    role: "worker",
    bindings: { run: o.runId, worker: o.workerId },
  });
  // Metrics first: /healthz answers and /readyz says 503 while the dataset loads.
  const metrics = await serveWorkerMetrics(o, log);
  const worker = new GradWorker({
    redisUrl: o.redisUrl,
    redisCa: o.redisCa,
    runId: o.runId,
    dataDir: o.data,
    concurrency: o.concurrency,
    workerId: o.workerId,
    lockDuration: o.lockSeconds * 1000,
    // Check for stalled jobs at least once per lock time, so a lost lock is noticed soon.
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
  });
  log.info({ signal, shards: worker.jobsDone }, "stopping: finishing the shard in hand");
  await worker.close();
  await metrics?.close();
  return 0;
}
