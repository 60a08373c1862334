/**
 * Metrics, health endpoints and logs: the naming rules on the real `/metrics`
 * of a coordinator and a worker process, `/readyz` following Redis, NaN kept
 * out of every metric, the local targets file, docs/metrics.md listing
 * exactly what the processes export, and the human-readable log line.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, connect as netConnect, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CoordinatorMetrics } from "../src/coordinator/metrics.js";
import type { StepInfo } from "../src/core/trainer.js";
import { formatLogLine } from "../src/shared/log.js";
import { MirroredCount } from "../src/shared/metrics-registry.js";
import { startMetricsServer } from "../src/shared/metrics-server.js";
import { localRunTargets, scrapeAddress, writeTargetsFile } from "../src/shared/prometheus-targets.js";
import { REJECT_REASONS, refusalLabel, rejectLabel } from "../src/shared/reasons.js";
import { serveWorkerMetrics, WorkerMetrics } from "../src/worker/metrics.js";
import { type CliProcess, runCli, startCli, stopCli, waitFor } from "./helpers/cli.js";
import { freePort, startTestRedis, type TestRedis } from "./helpers/redis.js";

// ---------------------------------------------------------------- exposition

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: string;
}
interface Family {
  name: string;
  type?: string;
  help?: string;
  samples: Sample[];
}

/** Parses the Prometheus text format (0.0.4) into families, in order. */
function parseExposition(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  let current: Family | undefined;
  const family = (name: string): Family => {
    let f = families.get(name);
    if (!f) {
      f = { name, samples: [] };
      families.set(name, f);
    }
    current = f;
    return f;
  };
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (meta) {
      const f = family(meta[2]);
      if (meta[1] === "HELP") f.help = meta[3];
      else f.type = meta[3];
      continue;
    }
    if (line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/.exec(line);
    if (!m) throw new Error(`unparsable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1]] = l[2];
    const sample = { name: m[1], labels, value: m[3] };
    // A sample belongs to the family above it (histograms add _bucket, _sum, _count).
    if (!current || !m[1].startsWith(current.name)) family(m[1]);
    current!.samples.push(sample);
  }
  return families;
}

/**
 * prom-client's default metrics that are gauges named `_total` (counts of
 * live handles): standard names that stock Node.js dashboards use, so they
 * are kept; the `_total`-only-on-counters rule holds for every gradfleet_ metric.
 */
const DEFAULT_TOTAL_GAUGES = new Set([
  "nodejs_active_handles_total",
  "nodejs_active_requests_total",
  "nodejs_active_resources_total",
]);

/** Label names a gradfleet metric may carry; each has a bounded set of values. */
const ALLOWED_LABELS = new Set([
  "phase",
  "queue",
  "state",
  "reason",
  "outcome",
  "worker",
  "version",
  "node",
  "le",
]);

/** Everything in an exposition that breaks the naming rules of the issue. */
function expositionProblems(text: string): string[] {
  const problems: string[] = [];
  for (const f of parseExposition(text).values()) {
    const n = f.name;
    if (!f.help) problems.push(`${n}: no HELP`);
    if (!f.type) problems.push(`${n}: no TYPE`);
    if (!/^(gradfleet_|process_|nodejs_)/.test(n))
      problems.push(`${n}: not gradfleet_ (nor a default metric)`);
    if (f.type === "counter" && !n.endsWith("_total")) problems.push(`${n}: a counter without _total`);
    if (f.type !== "counter" && n.endsWith("_total") && !DEFAULT_TOTAL_GAUGES.has(n)) {
      problems.push(`${n}: _total on a ${f.type}`);
    }
    if (n.startsWith("gradfleet_") && f.type === "histogram" && !n.endsWith("_seconds")) {
      problems.push(`${n}: a histogram not in _seconds`);
    }
    for (const s of f.samples) {
      if (!Number.isFinite(Number(s.value))) problems.push(`${s.name}: value ${s.value}`);
      if (!n.startsWith("gradfleet_")) continue;
      for (const label of Object.keys(s.labels)) {
        if (!ALLOWED_LABELS.has(label)) problems.push(`${s.name}: unexpected label ${label}`);
      }
    }
  }
  return problems;
}

/** The gradfleet_ family names of an exposition. */
function gradfleetFamilies(text: string): string[] {
  return [...parseExposition(text).keys()].filter((n) => n.startsWith("gradfleet_"));
}

/** The value of one sample (labels must match exactly), or undefined. */
function sampleValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const f of parseExposition(text).values()) {
    for (const s of f.samples) {
      if (s.name !== name) continue;
      const own = Object.entries(s.labels).filter(([k]) => k !== "worker");
      if (own.length === Object.keys(labels).length && own.every(([k, v]) => labels[k] === v)) {
        return Number(s.value);
      }
    }
  }
  return undefined;
}

async function get(url: string): Promise<{ status: number; body: string; type: string | null }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.text(), type: res.headers.get("content-type") };
}

/** GET that answers undefined while nothing listens. */
async function tryGet(url: string): Promise<{ status: number; body: string } | undefined> {
  try {
    return await get(url);
  } catch {
    return undefined;
  }
}

function stepInfo(
  over: Omit<Partial<StepInfo>, "timing"> & { timing?: Partial<StepInfo["timing"]> } = {},
): StepInfo {
  return {
    epoch: 0,
    step: 0,
    stepsPerEpoch: 10,
    updates: 1,
    loss: 0.5,
    samples: 64,
    batchSamples: 64,
    params: new Float32Array(1),
    ...over,
    timing: { compute: 0.01, communication: 0.02, update: 0.001, total: 0.031, ...over.timing },
  };
}

// --------------------------------------------------------------------- units

describe("metrics of a coordinator and a worker (in this process)", () => {
  it("keep NaN and infinities out, and show training values once they exist", async () => {
    const m = new CoordinatorMetrics({ cluster: false });
    const before = await m.registry.metrics();
    expect(expositionProblems(before)).toEqual([]);
    // No loss or accuracy before there is one: a 0 would be a lie.
    expect(gradfleetFamilies(before)).not.toContain("gradfleet_train_loss");
    expect(gradfleetFamilies(before)).not.toContain("gradfleet_test_accuracy_ratio");

    m.observer.onStep!(
      stepInfo({
        loss: Number.NaN,
        batchSamples: Number.NaN,
        timing: { compute: Number.NaN, communication: Number.POSITIVE_INFINITY, update: -1 },
      }),
    );
    m.observer.onEpoch!({
      epoch: 0,
      test: { accuracy: Number.NaN, cost: Number.POSITIVE_INFINITY } as never,
      trainCost: Number.NaN,
      samples: 0,
      trainSeconds: 0,
    });
    m.observer.onCheckpoint!(Number.NaN, Number.NaN);
    const poisoned = await m.registry.metrics();
    expect(poisoned).not.toMatch(/\bNaN\b|Inf\b(?!")/);
    expect(expositionProblems(poisoned)).toEqual([]);
    expect(sampleValue(poisoned, "gradfleet_samples_total")).toBe(0);
    expect(sampleValue(poisoned, "gradfleet_step_duration_seconds_count", { phase: "compute" })).toBe(0);
    expect(sampleValue(poisoned, "gradfleet_step_duration_seconds_count", { phase: "total" })).toBe(1);

    m.observer.onStep!(stepInfo({ loss: 0.25, epoch: 2, updates: 7 }));
    m.observer.onEpoch!({
      epoch: 2,
      test: { accuracy: 0.875, cost: 0.125 } as never,
      trainCost: 0.3,
      samples: 64,
      trainSeconds: 1,
    });
    m.observer.onCheckpoint!(0.02, 4096);
    const text = await m.registry.metrics();
    expect(expositionProblems(text)).toEqual([]);
    expect(sampleValue(text, "gradfleet_samples_total")).toBe(64);
    expect(sampleValue(text, "gradfleet_steps_total")).toBe(2);
    expect(sampleValue(text, "gradfleet_train_loss")).toBe(0.25);
    expect(sampleValue(text, "gradfleet_epoch")).toBe(3);
    expect(sampleValue(text, "gradfleet_weights_version")).toBe(7);
    expect(sampleValue(text, "gradfleet_test_accuracy_ratio")).toBe(0.875);
    expect(sampleValue(text, "gradfleet_test_cost")).toBe(0.125);
    expect(sampleValue(text, "gradfleet_checkpoint_size_bytes")).toBe(4096);
    expect(sampleValue(text, "gradfleet_checkpoint_duration_seconds_count")).toBe(1);
    expect(text).toMatch(
      new RegExp(
        `^gradfleet_build_info\\{version="\\d+\\.\\d+\\.\\d+[^"]*",node="${process.version}"\\} 1$`,
        "m",
      ),
    );
    // In-process training has no cluster: no queue or worker metrics pretending to be 0.
    expect(gradfleetFamilies(text)).not.toContain("gradfleet_live_workers");
    expect(m.readiness()).toEqual({ ready: true });
  });

  it("a worker counts shards by outcome and names itself on every series", async () => {
    const w = new WorkerMetrics("w-7");
    w.observer.onShard!("ok", Number.NaN, Number.NaN);
    w.observer.onShard!("ok", 0.004, 1000);
    w.observer.onShard!("refused", 0, 0);
    const text = await w.registry.metrics();
    expect(expositionProblems(text)).toEqual([]);
    expect(sampleValue(text, "gradfleet_worker_shards_total", { outcome: "ok" })).toBe(2);
    expect(sampleValue(text, "gradfleet_worker_shards_total", { outcome: "refused" })).toBe(1);
    // A refusal computes nothing: no compute time.
    expect(sampleValue(text, "gradfleet_worker_shard_compute_seconds_count")).toBe(1);
    expect(sampleValue(text, "gradfleet_worker_sent_bytes_total")).toBe(1000);
    for (const f of parseExposition(text).values()) {
      for (const s of f.samples) expect(s.labels.worker, s.name).toBe("w-7");
    }
    // Not ready without Redis, nor before the worker started (dataset loaded) or once it stops.
    expect(w.readiness()).toEqual({ ready: false, reason: "Redis is not connected" });
    w.attach({ redisConnected: true });
    expect(w.readiness()).toEqual({ ready: false, reason: "loading the dataset, or stopping" });
    w.observer.onReady!(true);
    expect(w.readiness()).toEqual({ ready: true });
    expect(sampleValue(await w.registry.metrics(), "gradfleet_worker_ready")).toBe(1);
    w.attach({ redisConnected: false });
    expect(w.readiness()).toEqual({ ready: false, reason: "Redis is not connected" });
    w.attach({ redisConnected: true });
    w.observer.onReady!(false);
    expect(w.readiness().ready).toBe(false);
  });

  it("export no NaN from the default metrics either, even for back-to-back scrapes", async () => {
    // prom-client's event-loop statistics come from a histogram reset at every scrape:
    // empty right after start and between two quick scrapes, where it would say NaN.
    const registry = new WorkerMetrics("lag").registry;
    expect(expositionProblems(await registry.metrics())).toEqual([]);
    await new Promise((r) => setTimeout(r, 100));
    const first = await registry.metrics();
    const second = await registry.metrics();
    expect(expositionProblems(first)).toEqual([]);
    expect(expositionProblems(second)).toEqual([]);
    expect(sampleValue(first, "nodejs_eventloop_lag_p99_seconds")).toBeGreaterThan(0);
    expect(sampleValue(second, "nodejs_eventloop_lag_p99_seconds")).toBe(
      sampleValue(first, "nodejs_eventloop_lag_p99_seconds"),
    );
  });

  it("mirrors running totals without ever decreasing, and bounds the reason label", () => {
    const c = new MirroredCount();
    expect([5, 5, 7, 2, 4, Number.NaN, 4].map((t) => c.delta(t))).toEqual([5, 0, 2, 0, 2, 0, 0]);
    expect(rejectLabel("decode")).toBe("decode");
    expect(rejectLabel("spec_mismatch")).toBe("spec_mismatch");
    expect(rejectLabel("refused")).toBe("refused");
    expect(rejectLabel("refused_worker_error")).toBe("other");
    expect(rejectLabel("anything else")).toBe("other");
    expect(REJECT_REASONS).toContain("duplicate");
    expect(REJECT_REASONS).toContain("stale");
    expect(refusalLabel("data_mismatch")).toBe("spec_mismatch");
    expect(refusalLabel("spec_mismatch")).toBe("spec_mismatch");
    expect(refusalLabel("worker_error")).toBe("refused");
  });
});

describe("the metrics endpoint", () => {
  it("serves /metrics, /healthz and /readyz, and refuses what it does not serve", async () => {
    const m = new WorkerMetrics("endpoint-test");
    let ready = false;
    const server = await startMetricsServer({
      registry: m.registry,
      host: "127.0.0.1",
      port: 0,
      readiness: () => (ready ? { ready: true } : { ready: false, reason: "warming up" }),
    });
    try {
      const metrics = await get(`${server.url}/metrics`);
      expect(metrics.status).toBe(200);
      expect(metrics.type).toContain("text/plain");
      expect(metrics.body).toContain("# TYPE gradfleet_worker_shards_total counter");
      expect((await get(`${server.url}/healthz`)).status).toBe(200);
      expect(await get(`${server.url}/readyz`)).toMatchObject({
        status: 503,
        body: "not ready: warming up\n",
      });
      ready = true;
      expect((await get(`${server.url}/readyz`)).status).toBe(200);
      expect((await get(`${server.url}/nope`)).status).toBe(404);
      expect((await fetch(`${server.url}/metrics`, { method: "POST" })).status).toBe(405);
      await expect(
        startMetricsServer({
          registry: m.registry,
          host: "127.0.0.1",
          port: server.port,
          readiness: () => ({ ready: true }),
        }),
      ).rejects.toThrow(`cannot serve metrics on 127.0.0.1:${server.port}: the port is in use`);
    } finally {
      await server.close();
    }
  });

  it("a second worker on the host serves on the next free port, and says which", async () => {
    // A port whose next one is free too: asked for by both workers.
    let asked = 0;
    for (let tries = 0; tries < 20 && asked === 0; tries++) {
      const p = await freePort();
      const probe = createServer();
      const nextFree = await new Promise<boolean>((resolve) => {
        probe.once("error", () => resolve(false));
        probe.listen(p + 1, "127.0.0.1", () => resolve(true));
      });
      if (nextFree) {
        await new Promise((r) => probe.close(r));
        asked = p;
      }
    }
    expect(asked).toBeGreaterThan(0);
    const lines: string[] = [];
    const log = pino({ level: "info" }, { write: (l: string) => lines.push(l) });
    const first = await serveWorkerMetrics(
      { metricsPort: asked, metricsHost: "127.0.0.1", workerId: "w-1" },
      log,
    );
    const second = await serveWorkerMetrics(
      { metricsPort: asked, metricsHost: "127.0.0.1", workerId: "w-2" },
      log,
    );
    try {
      expect((await get(`http://127.0.0.1:${asked}/metrics`)).body).toContain('worker="w-1"');
      expect((await get(`http://127.0.0.1:${asked + 1}/metrics`)).body).toContain('worker="w-2"');
      expect(lines.join("\n")).toContain(
        `metrics port ${asked} is in use (another worker on this host?); serving on ${asked + 1}`,
      );
    } finally {
      await first?.close();
      await second?.close();
    }
  });
});

describe("the local targets file", () => {
  it("lists the coordinator on P and worker i on P + i, scraped through loopback for a wildcard host", async () => {
    expect(scrapeAddress("0.0.0.0", 9464)).toBe("127.0.0.1:9464");
    expect(scrapeAddress("::", 9464)).toBe("[::1]:9464");
    expect(scrapeAddress("fe80::1", 9)).toBe("[fe80::1]:9");
    const dir = await mkdtemp(join(tmpdir(), "gf-targets-"));
    try {
      const path = join(dir, "nested", "targets.json");
      await writeTargetsFile(
        path,
        localRunTargets({ host: "0.0.0.0", coordinatorPort: 9500, workerPorts: [9501, 9502], runId: "r" }),
      );
      expect(JSON.parse(await readFile(path, "utf8"))).toEqual([
        { targets: ["127.0.0.1:9500"], labels: { job: "coordinator", run: "r" } },
        { targets: ["127.0.0.1:9501", "127.0.0.1:9502"], labels: { job: "worker", run: "r" } },
      ]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("train refuses --targets-file without a metrics port", async () => {
    const r = await runCli(["train", "--targets-file", "/tmp/never-written.json", "--workers", "2"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--targets-file: needs --metrics-port");
  });

  it("train refuses --min-workers above the workers it starts", async () => {
    const r = await runCli(["train", "--workers", "2", "--min-workers", "3"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--min-workers: 3 is more than the 2 workers train starts");
  });
});

describe("logs", () => {
  it("are one readable line per record on a terminal", () => {
    const time = new Date(2024, 0, 2, 3, 4, 5, 67).getTime();
    const line = formatLogLine(
      JSON.stringify({
        level: 40,
        time,
        role: "worker",
        pid: 1,
        run: "mnist",
        worker: "w-1",
        step: 3,
        why: "a b",
        msg: "shard deadline passed",
      }),
    );
    expect(line).toBe('03:04:05.067 WARN  worker w-1 [run mnist] shard deadline passed step=3 why="a b"');
    expect(formatLogLine(JSON.stringify({ level: 50, time, role: "train", err: "E\n at x", msg: "m" }))).toBe(
      "03:04:05.067 ERROR train m\n  err: E\n     at x",
    );
    expect(formatLogLine("not json")).toBe("not json");
  });
});

// ------------------------------------------------------- real processes

/** A TCP forwarder to Redis that starts listening only when told: "Redis comes up at this port". */
function forwarder(port: number, target: URL): Promise<Server> {
  const server = createServer((client) => {
    const upstream = netConnect({ host: target.hostname, port: Number(target.port || 6379) });
    client.pipe(upstream).pipe(client);
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

describe("a coordinator and a worker process", () => {
  let redis: TestRedis;
  let dir: string;
  const procs: CliProcess[] = [];

  beforeAll(async () => {
    redis = await startTestRedis();
    dir = await mkdtemp(join(tmpdir(), "gf-metrics-"));
  });
  afterAll(async () => {
    await Promise.all(procs.map((p) => stopCli(p, "SIGKILL")));
    await redis?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("are not ready until Redis is reachable, then export metrics that follow the rules and docs/metrics.md", async () => {
    const redisPort = await freePort();
    const target = new URL(redis.url);
    const viaForwarder = new URL(redis.url);
    viaForwarder.hostname = "127.0.0.1";
    viaForwarder.port = String(redisPort);
    const [coordPort, workerPort] = [await freePort(), await freePort()];
    const runId = `metrics-${randomBytes(3).toString("hex")}`;
    const common = ["--redis-url", viaForwarder.toString(), "--run-id", runId, "--metrics-host", "127.0.0.1"];
    const worker = startCli([
      "worker",
      ...common,
      "--worker-id",
      "mw-1",
      "--metrics-port",
      String(workerPort),
    ]);
    procs.push(worker);
    const coordinator = startCli([
      "coordinator",
      ...common,
      "--metrics-port",
      String(coordPort),
      ...[
        "--train-limit",
        "500",
        "--test-limit",
        "200",
        "--batch",
        "50",
        "--epochs",
        "1000",
        "--kernel",
        "ref",
      ],
      ...["--checkpoint-dir", join(dir, "checkpoints")],
    ]);
    procs.push(coordinator);
    const w = `http://127.0.0.1:${workerPort}`;
    const c = `http://127.0.0.1:${coordPort}`;

    // Alive, and (once the worker's dataset is loaded) not ready only because Redis is not there.
    await waitFor(
      async () => (await tryGet(`${w}/readyz`))?.body === "not ready: Redis is not connected\n",
      60_000,
    );
    expect((await get(`${w}/healthz`)).status).toBe(200);
    await waitFor(async () => (await tryGet(`${c}/healthz`))?.status === 200, 30_000);
    expect((await get(`${c}/readyz`)).status).toBe(503);

    const proxy = await forwarder(redisPort, target);
    try {
      await waitFor(async () => (await tryGet(`${w}/readyz`))?.status === 200, 30_000);
      await waitFor(async () => (await tryGet(`${c}/readyz`))?.status === 200, 30_000);
      // Wait for a finished epoch and a checkpoint, so every metric has had a value.
      await waitFor(async () => {
        const t = (await tryGet(`${c}/metrics`))?.body ?? "";
        return t.includes("gradfleet_test_accuracy_ratio ") && t.includes("gradfleet_checkpoint_size_bytes ");
      }, 60_000);
      const coordText = (await get(`${c}/metrics`)).body;
      const workerText = (await get(`${w}/metrics`)).body;

      expect(expositionProblems(coordText)).toEqual([]);
      expect(expositionProblems(workerText)).toEqual([]);
      expect(sampleValue(coordText, "gradfleet_live_workers")).toBe(1);
      expect(sampleValue(coordText, "gradfleet_samples_total")).toBeGreaterThan(0);
      expect(sampleValue(workerText, "gradfleet_worker_shards_total", { outcome: "ok" })).toBeGreaterThan(0);
      expect(sampleValue(workerText, "gradfleet_worker_ready")).toBe(1);
      // The default metrics are there, event-loop lag included.
      for (const text of [coordText, workerText]) {
        expect(text).toContain("# TYPE process_resident_memory_bytes gauge");
        expect(text).toContain("# TYPE nodejs_eventloop_lag_p99_seconds gauge");
      }

      // docs/metrics.md lists exactly the gradfleet_ metrics the processes export.
      const docs = await readFile(new URL("../docs/metrics.md", import.meta.url), "utf8");
      const documented = [...docs.matchAll(/^- `(gradfleet_[a-z0-9_]+)`/gm)].map((m) => m[1]).sort();
      const exported = [
        ...new Set([...gradfleetFamilies(coordText), ...gradfleetFamilies(workerText)]),
      ].sort();
      expect(documented).toEqual(exported);

      const stopped = await stopCli(coordinator, "SIGINT");
      expect(stopped.code, stopped.stderr).toBe(130);
      expect((await stopCli(worker)).code).toBe(0);
    } finally {
      proxy.close();
    }
  });
});
