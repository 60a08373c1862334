/**
 * What every gradfleet process's metrics share: a prom-client registry with
 * the default process/Node.js metrics (event-loop lag matters: a blocked
 * loop loses BullMQ job locks), the build-info metric, and guards that keep
 * NaN and infinities out of metrics.
 *
 * Naming follows Prometheus conventions: one `gradfleet_` prefix, base units
 * (seconds, bytes, ratios), `_total` on counters only, bounded label values.
 * The default metrics keep their standard `process_` / `nodejs_` names so
 * stock dashboards and alerts work on them.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  type Counter,
  collectDefaultMetrics,
  Gauge,
  type Histogram,
  type LabelValues,
  Registry,
} from "prom-client";
import { packageRoot } from "./package-root.js";

/** The prefix of every gradfleet metric. */
export const METRIC_PREFIX = "gradfleet_";

let version: string | undefined;

/** The gradfleet version from package.json ("unknown" if it cannot be read). */
export function gradfleetVersion(): string {
  if (version === undefined) {
    try {
      const pkg = JSON.parse(readFileSync(join(packageRoot(), "package.json"), "utf8")) as {
        version?: unknown;
      };
      version = typeof pkg.version === "string" ? pkg.version : "unknown";
    } catch {
      version = "unknown";
    }
  }
  return version;
}

/**
 * A registry with the default metrics and `gradfleet_build_info`.
 * `defaultLabels` are added to every series of the registry (a worker adds
 * `worker="<id>"`, so even its memory and event-loop series name it).
 */
export function createRegistry(defaultLabels?: Record<string, string>): Registry {
  const registry = new Registry();
  if (defaultLabels) registry.setDefaultLabels(defaultLabels);
  collectDefaultMetrics({ register: registry });
  guardDefaultMetrics(registry);
  const build = new Gauge({
    name: "gradfleet_build_info",
    help: "Always 1; the labels name the gradfleet and Node.js versions of the process",
    labelNames: ["version", "node"] as const,
    registers: [registry],
  });
  build.set({ version: gradfleetVersion(), node: process.version }, 1);
  return registry;
}

/** What a metric's `get()` resolves to. */
type MetricData = { values: { value: number }[] };
type Getter = () => Promise<MetricData>;

/** The statistics prom-client derives from its event-loop delay histogram. */
const LAG_STATS = ["min", "max", "mean", "stddev", "p50", "p90", "p99"].map(
  (s) => `nodejs_eventloop_lag_${s}_seconds`,
);

/**
 * Keeps NaN out of the default metrics too. prom-client computes the
 * event-loop lag statistics from a histogram it resets at every scrape; a
 * scrape that finds it empty (right after start, or two scrapes within its
 * 10 ms resolution) would export a NaN mean and a min of 2^63 ns. Such a
 * scrape repeats the last real statistics instead (or leaves them out before
 * there are any); any other non-finite value of a default metric is left out.
 */
function guardDefaultMetrics(registry: Registry): void {
  const meanMetric = registry.getSingleMetric("nodejs_eventloop_lag_mean_seconds") as unknown as
    | { get: Getter }
    | undefined;
  const meanGet = meanMetric?.get.bind(meanMetric);
  const last = new Map<string, MetricData>();
  for (const metric of registry.getMetricsAsArray()) {
    const m = metric as unknown as { name: string; get: Getter; getForPromString?: Getter };
    // The registry exports a histogram through getForPromString, everything else through get.
    const key = typeof m.getForPromString === "function" ? "getForPromString" : "get";
    const original = (m[key] as Getter).bind(m);
    if (LAG_STATS.includes(m.name) && meanGet) {
      m[key] = async () => {
        const data = await original();
        // The lag gauge's collect set all statistics at once, earlier in this same scrape.
        const empty = (await meanGet()).values.some((v) => !Number.isFinite(v.value));
        if (!empty) last.set(m.name, data);
        return empty ? (last.get(m.name) ?? { ...data, values: [] }) : data;
      };
    } else {
      m[key] = async () => {
        const data = await original();
        return { ...data, values: data.values.filter((v) => Number.isFinite(v.value)) };
      };
    }
  }
}

// prom-client accepts NaN silently in inc() and set() (`counter.inc(NaN)`
// poisons the counter for good), so every update goes through these guards.

/** Adds `value` to a counter when it is finite and positive; anything else is dropped. */
export function incCounter<T extends string>(c: Counter<T>, value: number, labels?: LabelValues<T>): void {
  if (!Number.isFinite(value) || value <= 0) return;
  if (labels) c.inc(labels, value);
  else c.inc(value);
}

/** Records a duration or size when it is finite and not negative; anything else is dropped. */
export function observeHistogram<T extends string>(
  h: Histogram<T>,
  value: number,
  labels?: LabelValues<T>,
): void {
  if (!Number.isFinite(value) || value < 0) return;
  if (labels) h.observe(labels, value);
  else h.observe(value);
}

/** Sets a gauge when `value` is finite; otherwise the gauge keeps its last value. */
export function setGauge<T extends string>(g: Gauge<T>, value: number, labels?: LabelValues<T>): void {
  if (!Number.isFinite(value)) return;
  if (labels) g.set(labels, value);
  else g.set(value);
}

/**
 * A gauge that appears in `registry` only once it has a value: a loss or an
 * accuracy of 0 before the first step would be a lie on the dashboard.
 */
export class LazyGauge {
  private readonly gauge: Gauge;
  private registered = false;

  constructor(
    private readonly registry: Registry,
    config: { name: string; help: string },
  ) {
    this.gauge = new Gauge({ ...config, registers: [] });
  }

  /** Sets the value (finite values only), registering the gauge on first use. */
  set(value: number): void {
    if (!Number.isFinite(value)) return;
    if (!this.registered) {
      this.registry.registerMetric(this.gauge);
      this.registered = true;
    }
    this.gauge.set(value);
  }
}

/**
 * A counter that mirrors a running total kept elsewhere (e.g. a count the
 * workers' Lua script keeps in Redis): {@link LazyGauge}'s counterpart for
 * counters. `sync(total)` adds what is new since the last call; a total that
 * went DOWN (its source was reset, e.g. Redis restarted empty) is taken as
 * the new baseline, so the counter never decreases.
 */
export class MirroredCount {
  private last = 0;

  /** The increase since the previous call (0 when the total went down or is not finite). */
  delta(total: number): number {
    if (!Number.isFinite(total)) return 0;
    const d = total - this.last;
    this.last = total;
    return Math.max(d, 0);
  }
}
