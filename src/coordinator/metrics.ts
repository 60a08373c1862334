/**
 * The coordinator's Prometheus metrics: training progress (loss, test
 * accuracy and cost, samples and steps as counters so throughput is a
 * `rate()`), step time by phase, checkpoints, and — for a cluster run —
 * live workers, queue depth, shard retries and rejected results by reason.
 * `train --workers 0` serves the same training metrics without the cluster ones.
 *
 * Training metrics are pushed by the run's observer; cluster metrics are
 * read when Prometheus scrapes (from the executor's ClusterStats and Redis),
 * so the hot path pays nothing for them.
 */

import type { Queue } from "bullmq";
import type { Redis } from "ioredis";
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { RunObserver } from "../run/observer.js";
import { LIVE_WORKER_WINDOW_MS, runKeys, SEATS_QUEUE_NAME } from "../shared/keys.js";
import type { Logger } from "../shared/log.js";
import {
  createRegistry,
  incCounter,
  LazyGauge,
  MirroredCount,
  observeHistogram,
  setGauge,
} from "../shared/metrics-registry.js";
import { type Readiness, ServedMetrics } from "../shared/metrics-server.js";
import { REJECT_REASONS, rejectLabel } from "../shared/reasons.js";
import { settleWithin } from "../shared/settle-within.js";
import type { DirectExecutor } from "./direct-executor.js";

export { LIVE_WORKER_WINDOW_MS };

/** The phases of a step, the `phase` label of `gradfleet_step_duration_seconds`. */
export const STEP_PHASES = ["compute", "communication", "update", "total"] as const;

/** BullMQ job states reported by `gradfleet_queue_jobs`. */
export const QUEUE_STATES = ["waiting", "active", "delayed", "prioritized", "failed"] as const;

/** How long a scrape waits for Redis before it reports what it has. */
const SCRAPE_REDIS_TIMEOUT_MS = 2_000;

const STEP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const CHECKPOINT_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** What the cluster metrics read at scrape time. */
interface ClusterSource {
  executor: DirectExecutor;
  redis: Redis;
  workersKey: string;
}

/** The coordinator's metrics; see the module comment. */
export class CoordinatorMetrics extends ServedMetrics {
  override readonly registry: Registry;
  /** Feed it to the run (runSession / runCoordinator). */
  readonly observer: RunObserver;
  private source?: ClusterSource;

  /** @param opts.cluster whether this is a cluster run (adds the cluster metrics; readiness needs Redis). */
  constructor(private readonly opts: { cluster: boolean }) {
    super();
    const registry = createRegistry();
    this.registry = registry;
    const reg = [registry];

    const loss = new LazyGauge(registry, {
      name: "gradfleet_train_loss",
      help: "Mean training cost of the latest step's mini-batch",
    });
    const accuracy = new LazyGauge(registry, {
      name: "gradfleet_test_accuracy_ratio",
      help: "Test-set accuracy (0 to 1) after the latest epoch",
    });
    const testCost = new LazyGauge(registry, {
      name: "gradfleet_test_cost",
      help: "Mean test-set cost after the latest epoch",
    });
    const checkpointSize = new LazyGauge(registry, {
      name: "gradfleet_checkpoint_size_bytes",
      help: "Size of the latest checkpoint file",
    });
    const samples = new Counter({
      name: "gradfleet_samples_total",
      help: "Training samples that contributed to an update (throughput: rate())",
      registers: reg,
    });
    const steps = new Counter({
      name: "gradfleet_steps_total",
      help: "Optimizer updates applied by this process",
      registers: reg,
    });
    const epochsDone = new Counter({
      name: "gradfleet_epochs_total",
      help: "Epochs finished and evaluated by this process",
      registers: reg,
    });
    const epoch = new Gauge({
      name: "gradfleet_epoch",
      help: "Epoch of the latest step, counted from 1",
      registers: reg,
    });
    const version = new Gauge({
      name: "gradfleet_weights_version",
      help: "Weights version after the latest step (= updates applied since the run began)",
      registers: reg,
    });
    const stepSeconds = new Histogram({
      name: "gradfleet_step_duration_seconds",
      help: "Time of a training step by phase: the busiest worker's compute, communication (the rest of getting all shards), update (combine and optimizer), total",
      labelNames: ["phase"] as const,
      buckets: STEP_BUCKETS,
      registers: reg,
    });
    for (const phase of STEP_PHASES) stepSeconds.zero({ phase });
    const checkpointSeconds = new Histogram({
      name: "gradfleet_checkpoint_duration_seconds",
      help: "Time to write a checkpoint",
      buckets: CHECKPOINT_BUCKETS,
      registers: reg,
    });

    this.observer = {
      onStep: (info) => {
        incCounter(samples, info.batchSamples);
        incCounter(steps, 1);
        loss.set(info.loss);
        setGauge(epoch, info.epoch + 1);
        setGauge(version, info.updates);
        for (const phase of STEP_PHASES) observeHistogram(stepSeconds, info.timing[phase], { phase });
      },
      onEpoch: (info) => {
        incCounter(epochsDone, 1);
        accuracy.set(info.test.accuracy);
        testCost.set(info.test.cost);
      },
      onCheckpoint: (seconds, bytes) => {
        observeHistogram(checkpointSeconds, seconds);
        checkpointSize.set(bytes);
      },
    };

    if (opts.cluster) this.registerClusterMetrics(reg);
  }

  private registerClusterMetrics(reg: Registry[]): void {
    const self = this;
    new Gauge({
      name: "gradfleet_live_workers",
      help: `Workers whose last heartbeat is at most ${LIVE_WORKER_WINDOW_MS / 1000} s old`,
      registers: reg,
      async collect() {
        const s = self.source;
        if (!s) return;
        const n = await withTimeout(s.redis.zcount(s.workersKey, Date.now() - LIVE_WORKER_WINDOW_MS, "+inf"));
        // Redis unreachable: keep the last value rather than report 0 workers.
        if (n !== undefined) setGauge(this, n);
      },
    });
    new Gauge({
      name: "gradfleet_queue_jobs",
      help: "Seat jobs in the run's BullMQ queue by state (active: workers seated in the run)",
      labelNames: ["queue", "state"] as const,
      registers: reg,
      async collect() {
        const s = self.source;
        if (!s) return;
        const queues: [string, Queue][] = [[SEATS_QUEUE_NAME, s.executor.seatsQueue]];
        const all = await withTimeout(Promise.all(queues.map(([, q]) => q.getJobCounts(...QUEUE_STATES))));
        if (!all) return;
        for (const [i, [queue]] of queues.entries()) {
          for (const state of QUEUE_STATES) setGauge(this, all[i][state] ?? 0, { queue, state });
        }
      },
    });
    const retried = new MirroredCount();
    new Counter({
      name: "gradfleet_shard_retries_total",
      help: "Shards sent again to a worker (their worker left or missed --step-timeout, or the result was refused)",
      registers: reg,
      collect() {
        const s = self.source;
        if (s) incCounter(this, retried.delta(s.executor.stats.retriedShards));
      },
    });
    const seen = new Map<string, MirroredCount>();
    const mirror = (key: string) => {
      let m = seen.get(key);
      if (!m) {
        m = new MirroredCount();
        seen.set(key, m);
      }
      return m;
    };
    const rejected = new Counter({
      name: "gradfleet_results_rejected_total",
      help: "Shard results not used, by reason (duplicate and stale ones are dropped, the others recomputed)",
      labelNames: ["reason"] as const,
      registers: reg,
      collect() {
        const s = self.source;
        if (!s) return;
        const stats = s.executor.stats;
        incCounter(this, mirror("duplicate").delta(stats.duplicateResults), { reason: "duplicate" });
        incCounter(this, mirror("stale").delta(stats.staleResults), { reason: "stale" });
        for (const [key, n] of stats.rejected)
          incCounter(this, mirror(key).delta(n), { reason: rejectLabel(key) });
      },
    });
    // Every reason starts at 0, so rate() works and the dashboard shows 0 rather than nothing.
    for (const reason of REJECT_REASONS) rejected.inc({ reason }, 0);
  }

  /** Connects the cluster metrics to a published run (runCoordinator's `onStarted`). */
  attach(executor: DirectExecutor, redis: Redis): void {
    this.source = { executor, redis, workersKey: runKeys(executor.spec.runId).workers };
  }

  /** Ready when training can proceed: in-process always; a cluster run once published and while Redis is connected. */
  override readiness(): Readiness {
    if (!this.opts.cluster) return { ready: true };
    if (!this.source) return { ready: false, reason: "connecting to Redis and publishing the run" };
    const status = this.source.redis.status;
    return status === "ready" ? { ready: true } : { ready: false, reason: `Redis connection is ${status}` };
  }
}

/**
 * The coordinator metrics served on `--metrics-host`:`--metrics-port`, or
 * undefined when the port is 0 (metrics off).
 */
export async function serveCoordinatorMetrics(
  o: { metricsPort: number; metricsHost: string },
  log: Logger,
  opts: { cluster: boolean },
): Promise<CoordinatorMetrics | undefined> {
  if (o.metricsPort === 0) return undefined;
  const metrics = new CoordinatorMetrics(opts);
  const server = await metrics.serve(o.metricsHost, o.metricsPort, log);
  log.info({ url: `${server.url}/metrics` }, "serving metrics");
  return metrics;
}

/** `p`'s value, or undefined when it fails or takes longer than a scrape should. */
function withTimeout<T>(p: Promise<T>): Promise<T | undefined> {
  return settleWithin(p, SCRAPE_REDIS_TIMEOUT_MS);
}
