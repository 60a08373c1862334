/**
 * `gradfleet worker` (`npm run worker`): one worker process; scale by
 * running more. SIGINT/SIGTERM finish the shard in hand, then exit.
 */
import type { WorkerOptions } from "../cli/options.js";
import { createLogger } from "../shared/log.js";
import { GradWorker } from "./grad-worker.js";

/** Runs `worker` until a signal; returns the exit code. */
export async function runWorkerCommand(o: WorkerOptions): Promise<number> {
  const log = createLogger({ level: o.logLevel, role: "worker", bindings: { run: o.runId, worker: o.workerId } });
  const worker = new GradWorker({
    redisUrl: o.redisUrl,
    redisCa: o.redisCa,
    runId: o.runId,
    dataDir: o.data,
    concurrency: o.concurrency,
    workerId: o.workerId,
    log,
  });
  await worker.start();
  const signal = await new Promise<string>((resolve) => {
    process.once("SIGINT", () => resolve("SIGINT"));
    process.once("SIGTERM", () => resolve("SIGTERM"));
  });
  log.info({ signal, shards: worker.jobsDone }, "stopping: finishing the shard in hand");
  await worker.close();
  return 0;
}
