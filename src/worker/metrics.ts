/**
 * A worker's Prometheus metrics: ranges of shards by outcome, their compute
 * time, bytes of results sent. Every series of the process — the
 * default process/Node.js ones too — carries `worker="<--worker-id>"`, so
 * the dashboard can tell workers apart (and spot a straggler) whether
 * Prometheus found them by DNS, a file or a static list.
 */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { PortInUseError } from "../shared/listen.js";
import type { Logger } from "../shared/log.js";
import { createRegistry, incCounter, observeHistogram } from "../shared/metrics-registry.js";
import { type Readiness, ServedMetrics } from "../shared/metrics-server.js";
import type { ShardOutcome, WorkerObserver } from "./observer.js";

/** Values of the `outcome` label of `gradfleet_worker_shards_total`. */
export const SHARD_OUTCOMES: readonly ShardOutcome[] = ["ok", "refused"];

const COMPUTE_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/** Whether the worker's Redis connection is up; GradWorker has it. */
export interface RedisLink {
  readonly redisConnected: boolean;
}

/** A worker's metrics; see the module comment. */
export class WorkerMetrics extends ServedMetrics {
  override readonly registry: Registry;
  /** Pass it to the GradWorker. */
  readonly observer: WorkerObserver;
  private started = false;
  private link?: RedisLink;

  constructor(workerId: string) {
    super();
    const registry = createRegistry({ worker: workerId });
    this.registry = registry;
    const reg = [registry];
    const shards = new Counter({
      name: "gradfleet_worker_shards_total",
      help: "Ranges of shards handled, by outcome (ok: computed and sent to the coordinator; refused: a session this worker cannot serve)",
      labelNames: ["outcome"] as const,
      registers: reg,
    });
    for (const outcome of SHARD_OUTCOMES) shards.inc({ outcome }, 0);
    const compute = new Histogram({
      name: "gradfleet_worker_shard_compute_seconds",
      help: "Time to compute one range of shards' gradient sums (forward and backward over its shards)",
      buckets: COMPUTE_BUCKETS,
      registers: reg,
    });
    const sent = new Counter({
      name: "gradfleet_worker_sent_bytes_total",
      help: "Bytes of gradient results sent to the coordinator's data port",
      registers: reg,
    });
    const self = this;
    new Gauge({
      name: "gradfleet_worker_ready",
      help: "1 when the worker takes seats (dataset loaded, Redis connected), else 0",
      registers: reg,
      collect() {
        this.set(self.readiness().ready ? 1 : 0);
      },
    });
    this.observer = {
      onShard: (outcome, computeSeconds, bytesOut) => {
        incCounter(shards, 1, { outcome });
        // Refusals report 0 s: not a compute time.
        if (computeSeconds > 0) observeHistogram(compute, computeSeconds);
        incCounter(sent, bytesOut);
      },
      onReady: (ready) => {
        this.started = ready;
      },
    };
  }

  /** Gives readiness the worker's Redis connection state. */
  attach(link: RedisLink): void {
    this.link = link;
  }

  /** Ready while the Redis connection is up, once the worker has started (dataset loaded) and until it stops. */
  override readiness(): Readiness {
    if (!this.link?.redisConnected) return { ready: false, reason: "Redis is not connected" };
    if (!this.started) return { ready: false, reason: "loading the dataset, or stopping" };
    return { ready: true };
  }
}

/**
 * The worker metrics served on `--metrics-host`:`--metrics-port`, or
 * undefined when the port is 0 (metrics off). Start it before the worker,
 * so `/healthz` answers and `/readyz` says 503 while the dataset loads.
 */
/** Ports after --metrics-port a worker tries when that one is taken. */
const NEXT_PORTS = 63;

export async function serveWorkerMetrics(
  o: { metricsPort: number; metricsHost: string; workerId: string },
  log: Logger,
): Promise<WorkerMetrics | undefined> {
  if (o.metricsPort === 0) return undefined;
  const metrics = new WorkerMetrics(o.workerId);
  // Several workers on one host ("scale by running more"): each takes the
  // next free port after the one asked for, and says which.
  for (let port = o.metricsPort; ; port++) {
    try {
      const server = await metrics.serve(o.metricsHost, port, log);
      if (port !== o.metricsPort) {
        log.warn(
          { asked: o.metricsPort, url: `${server.url}/metrics` },
          `metrics port ${o.metricsPort} is in use (another worker on this host?); serving on ${port}`,
        );
      } else log.info({ url: `${server.url}/metrics` }, "serving metrics");
      return metrics;
    } catch (e) {
      if (!(e instanceof PortInUseError) || port >= o.metricsPort + NEXT_PORTS || port >= 65535) throw e;
    }
  }
}
