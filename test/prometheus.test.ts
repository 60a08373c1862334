/**
 * The deploy configuration against the real thing: `promtool check config`
 * on the Prometheus configs, the Grafana provisioning consistent with the
 * dashboard, and every PromQL expression of the dashboard evaluated by a
 * real Prometheus (Debian's `prometheus` package; `.ci/run` installs it)
 * that scrapes a local `train --workers 2` run through its file_sd targets
 * file: each must return at least one series.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { type CliProcess, startCli, stopCli, waitFor } from "./helpers/cli.js";
import { freePort, startTestRedis, type TestRedis } from "./helpers/redis.js";

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const root = (path: string) => new URL(`../${path}`, import.meta.url).pathname;
const DASHBOARD = root("deploy/grafana/dashboards/gradfleet.json");
const DATASOURCE_UID = "gradfleet-prometheus";

/** The absolute path of `cmd` on PATH; fails with how to install it. */
function required(cmd: string): string {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir !== "" && existsSync(join(dir, cmd))) return join(dir, cmd);
  }
  throw new Error(`${cmd} is not on PATH: install Debian's prometheus package (apt-get install prometheus)`);
}

interface Panel {
  title?: string;
  type?: string;
  datasource?: { type?: string; uid?: string };
  targets?: { expr?: string; datasource?: { uid?: string } }[];
  panels?: Panel[];
}
interface Dashboard {
  uid: string;
  panels: Panel[];
  templating: { list: { name: string; query: string | { query: string }; datasource?: { uid?: string } }[] };
}

async function dashboard(): Promise<Dashboard> {
  return JSON.parse(await readFile(DASHBOARD, "utf8")) as Dashboard;
}

/** Every panel, rows' nested panels included. */
function allPanels(panels: Panel[]): Panel[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
}

/** Every PromQL expression of the dashboard, with the title of its panel. */
function expressions(d: Dashboard): { panel: string; expr: string }[] {
  return allPanels(d.panels).flatMap((p) =>
    (p.targets ?? []).filter((t) => t.expr).map((t) => ({ panel: p.title ?? "?", expr: t.expr! })),
  );
}

/** What Grafana would send: dashboard variables and interval macros replaced. */
function substitute(expr: string): string {
  return expr
    .replaceAll("$__rate_interval", "10s")
    .replaceAll("$__interval", "2s")
    .replaceAll("$__range", "1m")
    .replace(/\$\{?worker\}?/g, ".*");
}

describe("deploy/prometheus", () => {
  for (const file of ["prometheus.yml", "local.yml"]) {
    it(`promtool check config passes on ${file}`, async () => {
      const promtool = required("promtool");
      const { stdout } = await run(promtool, ["check", "config", root(`deploy/prometheus/${file}`)]);
      expect(stdout).toContain("SUCCESS");
    });
  }

  it("finds every worker replica by DNS on the compose service name, and the coordinator by name", async () => {
    const config = parseYaml(await readFile(root("deploy/prometheus/prometheus.yml"), "utf8"));
    const jobs = new Map<string, Record<string, unknown>>(
      (config.scrape_configs as { job_name: string }[]).map((j) => [j.job_name, j]),
    );
    expect(jobs.get("coordinator")).toMatchObject({ static_configs: [{ targets: ["coordinator:9464"] }] });
    expect(jobs.get("worker")).toMatchObject({
      dns_sd_configs: [{ names: ["worker"], type: "A", port: 9465 }],
    });
  });
});

describe("deploy/grafana", () => {
  it("provisions the data source and the dashboard directory the dashboard and compose rely on", async () => {
    const ds = parseYaml(
      await readFile(root("deploy/grafana/provisioning/datasources/prometheus.yml"), "utf8"),
    );
    expect(ds.datasources).toEqual([
      expect.objectContaining({ uid: DATASOURCE_UID, type: "prometheus", url: "http://prometheus:9090" }),
    ]);
    const providers = parseYaml(
      await readFile(root("deploy/grafana/provisioning/dashboards/gradfleet.yml"), "utf8"),
    ).providers as { type: string; options: { path: string } }[];
    expect(providers).toHaveLength(1);
    expect(providers[0].type).toBe("file");
    // docker-compose.yml mounts deploy/grafana/dashboards where the provider looks.
    const compose = await readFile(root("deploy/docker-compose.yml"), "utf8").catch(() => undefined);
    if (compose !== undefined) {
      expect(compose).toContain(`./grafana/dashboards:${providers[0].options.path}`);
    }
  });

  it("queries only the provisioned data source, in every panel and variable", async () => {
    const d = await dashboard();
    expect(d.uid).toMatch(/^[a-z0-9-]{1,40}$/);
    for (const p of allPanels(d.panels)) {
      if (p.type === "row") continue;
      expect(p.datasource?.uid, p.title).toBe(DATASOURCE_UID);
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets ?? []) expect(t.datasource?.uid, p.title).toBe(DATASOURCE_UID);
    }
    for (const v of d.templating.list) expect(v.datasource?.uid, v.name).toBe(DATASOURCE_UID);
    expect(expressions(d).length).toBeGreaterThan(20);
  });
});

/** Whether nothing listens on 127.0.0.1:port right now. */
function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

/** A port P with P + 1 and P + 2 free too (the coordinator and two local workers). */
async function freePortRun(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const p = await freePort();
    if (p + 2 < 65536 && (await portFree(p + 1)) && (await portFree(p + 2))) return p;
  }
  throw new Error("no three consecutive free ports found");
}

interface PromResult {
  metric: Record<string, string>;
  value: [number, string];
}

describe("the dashboard against a real Prometheus", () => {
  let redis: TestRedis;
  let dir: string;
  let prometheus: ChildProcess | undefined;
  let train: CliProcess | undefined;
  let promUrl: string;
  let promLog = "";

  beforeAll(async () => {
    const binary = required("prometheus");
    redis = await startTestRedis();
    dir = await mkdtemp(join(tmpdir(), "gf-prometheus-"));
    // deploy/prometheus/local.yml, with the test's targets file and a 1 s scrape interval.
    const config = parseYaml(await readFile(root("deploy/prometheus/local.yml"), "utf8"));
    config.global.scrape_interval = "1s";
    config.global.scrape_timeout = "1s";
    config.scrape_configs[0].file_sd_configs[0] = {
      files: [join(dir, "targets.json")],
      refresh_interval: "1s",
    };
    await writeFile(join(dir, "prometheus.yml"), JSON.stringify(config));
    const port = await freePort();
    promUrl = `http://127.0.0.1:${port}`;
    prometheus = spawn(
      binary,
      [
        `--config.file=${join(dir, "prometheus.yml")}`,
        `--storage.tsdb.path=${join(dir, "data")}`,
        `--web.listen-address=127.0.0.1:${port}`,
        "--log.level=warn",
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    // Whatever happens to this test process, Prometheus goes with it.
    const child = prometheus;
    process.once("exit", () => child.kill("SIGKILL"));
    prometheus.stderr!.on("data", (d) => {
      promLog = (promLog + d).slice(-4000);
    });
    await waitFor(async () => {
      if (prometheus!.exitCode !== null) throw new Error(`prometheus exited: ${promLog}`);
      return (await fetch(`${promUrl}/-/ready`).catch(() => undefined))?.status === 200;
    }, 60_000);
  });

  afterAll(async () => {
    if (prometheus && prometheus.exitCode === null) {
      const gone = new Promise((r) => prometheus!.once("exit", r));
      prometheus.kill("SIGTERM");
      await gone;
    }
    if (train) {
      // SIGTERM, not SIGKILL: train stops its worker processes on the way out; killed, it would
      // orphan them (and they hold its stderr open, so it would never count as closed).
      train.child.kill("SIGTERM");
      const exited = await Promise.race([train.done.then(() => true), sleep(20_000).then(() => false)]);
      if (!exited) train.child.kill("SIGKILL");
    }
    await redis?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** An instant query; throws with Prometheus's error for a bad expression. */
  async function query(expr: string, time?: number): Promise<PromResult[]> {
    const params = new URLSearchParams({ query: expr });
    if (time !== undefined) params.set("time", String(time));
    const res = await fetch(`${promUrl}/api/v1/query?${params}`);
    const body = (await res.json()) as { status: string; error?: string; data?: { result: PromResult[] } };
    if (body.status !== "success") throw new Error(`${expr}: ${body.error ?? res.status}`);
    return body.data!.result;
  }

  it("every PromQL expression of the dashboard returns at least one series for a local run", async () => {
    const metricsPort = await freePortRun();
    const targets = join(dir, "targets.json");
    // More epochs than the test needs: it stops the run (SIGINT) once Prometheus has seen enough.
    train = startCli([
      "train",
      ...["--workers", "2", "--metrics-port", String(metricsPort), "--targets-file", targets],
      ...["--redis-url", redis.url, "--kernel", "ref"],
      ...["--train-limit", "2000", "--test-limit", "500", "--epochs", "1000", "--batch", "64"],
      ...["--checkpoint-dir", join(dir, "checkpoints")],
    ]);
    const running = () => {
      if (train!.child.exitCode !== null) throw new Error(`train exited early: ${train!.stderr()}`);
    };

    // Three processes up, each scraped for 6 s or more, an epoch evaluated and checkpointed.
    await waitFor(
      async () => {
        running();
        const scraped = await query("count(count_over_time(up[30s]) >= 6 and up == 1)");
        const ready = await query("gradfleet_test_accuracy_ratio and on () gradfleet_checkpoint_size_bytes");
        return Number(scraped[0]?.value[1] ?? 0) === 3 && ready.length > 0;
      },
      90_000,
      500,
    );
    // The targets file's job labels are the compose config's job names.
    const jobs = await query("count by (job) (up)");
    expect(Object.fromEntries(jobs.map((r) => [r.metric.job, Number(r.value[1])]))).toEqual({
      coordinator: 1,
      worker: 2,
    });

    // Evaluate everything at one instant inside the run.
    const at = Date.now() / 1000;
    const d = await dashboard();
    const empty: string[] = [];
    for (const { panel, expr } of expressions(d)) {
      const result = await query(substitute(expr), at);
      if (result.length === 0) empty.push(`${panel}: ${expr}`);
    }
    expect(empty).toEqual([]);

    // The variable's label_values(metric, label): both workers.
    for (const v of d.templating.list) {
      const q = typeof v.query === "string" ? v.query : v.query.query;
      const m = /^label_values\((\w+),\s*(\w+)\)$/.exec(q);
      expect(m, q).not.toBeNull();
      const params = new URLSearchParams({ "match[]": m![1], start: String(at - 60), end: String(at) });
      const res = (await (await fetch(`${promUrl}/api/v1/label/${m![2]}/values?${params}`)).json()) as {
        data: string[];
      };
      expect(res.data.sort()).toEqual(["local-1", "local-2"]);
    }

    // A graceful stop: the run ends after the step in hand, and takes its workers with it.
    const stopped = await stopCli(train, "SIGINT");
    expect(stopped.code, stopped.stderr).toBe(130);
    train = undefined;
  });
});
