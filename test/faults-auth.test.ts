/**
 * Redis with `requirepass` and an ACL user: the cluster works with the right
 * credentials; with wrong or missing ones the coordinator, a worker and
 * `train` fail fast with a clear message; no password ever appears in a log,
 * an error message, the `--dry-run` output or the metrics.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runFlags, stopCli, waitFor } from "./helpers/cli.js";
import { freePort, startTestRedis, type TestRedis } from "./helpers/redis.js";
import { Tracked } from "./helpers/tracked.js";

const RUN = runFlags({ train: 3000, test: 500, epochs: 1, batch: 64, shards: 4 });
// Distinctive, so a leak anywhere is found by a plain substring search.
const DEFAULT_PASSWORD = "dflt-Pw-4c1d9e";
const ACL_PASSWORD = "acl-Pw-7f3b2a";
const WRONG_PASSWORD = "wrong-Pw-9e8d7c";
const SECRETS = [DEFAULT_PASSWORD, ACL_PASSWORD, WRONG_PASSWORD];
/**
 * Fail-fast bound: it tells "refused at once" from "retried until some long
 * timeout", not how fast a process starts: generous, since a loaded 2-core
 * machine was seen to take 24 s.
 */
const FAST_MS = 60_000;

const procs = new Tracked();
let redis: TestRedis;
let port: number;
let baseline: Record<string, unknown>;

beforeAll(async () => {
  redis = await startTestRedis({
    password: DEFAULT_PASSWORD,
    aclUser: { name: "gfuser", password: ACL_PASSWORD },
  });
  port = redis.port!;
  expect(redis.url).toBe(`redis://gfuser:${ACL_PASSWORD}@127.0.0.1:${port}`);
  const r = await procs.run(["train", ...RUN, "--workers", "0"]);
  expect(r.code, r.stderr).toBe(0);
  baseline = r.json!;
});

afterAll(async () => {
  await procs.killAll();
  await redis?.stop();
});

/** Asserts no secret appears in any of the texts. */
function expectNoSecret(...texts: string[]): void {
  for (const text of texts)
    for (const secret of SECRETS) expect(text.includes(secret), `leaked ${secret} in:\n${text}`).toBe(false);
}

describe("Redis with a password and an ACL user", () => {
  it("train --workers 1 with the ACL user's URL gives the same bits, and prints no password", async () => {
    const r = await procs.run([
      "train",
      ...RUN,
      "--workers",
      "1",
      "--redis-url",
      redis.url,
      "--metrics-port",
      "0",
      "--log-level",
      "debug",
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json!.weightsSha256).toBe(baseline.weightsSha256);
    expect(r.json!.samples).toBe(3000);
    // The log names the server (redacted), so the search below is not vacuous.
    expect(r.stderr).toContain(`127.0.0.1:${port}`);
    expectNoSecret(r.stdout, r.stderr);
    console.log(
      `[faults] ACL user + requirepass: train --workers 1 ok, same bits; no password in ${r.stderr.length} bytes of stderr`,
    );
  });

  it("the default user's password works too, and neither the metrics nor --dry-run show it", async () => {
    const url = `redis://:${DEFAULT_PASSWORD}@127.0.0.1:${port}`;
    const runId = "auth-default";
    const metricsPort = await freePort();
    const worker = procs.start([
      "worker",
      "--redis-url",
      url,
      "--run-id",
      runId,
      "--metrics-port",
      "0",
      "--log-level",
      "debug",
    ]);
    const coord = procs.start([
      "coordinator",
      ...RUN,
      "--redis-url",
      url,
      "--run-id",
      runId,
      "--metrics-port",
      String(metricsPort),
      "--log-level",
      "debug",
    ]);
    try {
      // Scrape while the run is live.
      let metrics = "";
      await waitFor(async () => {
        const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).catch(() => undefined);
        metrics = res?.ok ? await res.text() : "";
        return metrics.includes("gradfleet_");
      }, 30_000);
      const r = await coord.done;
      expect(r.code, r.stderr).toBe(0);
      expect(r.json!.weightsSha256).toBe(baseline.weightsSha256);
      const w = await stopCli(worker);
      expect(w.code, w.stderr).toBe(0);
      const dry = await procs.run(["worker", "--redis-url", url, "--dry-run"]);
      expect(dry.code, dry.stderr).toBe(0);
      expect(dry.stdout).toContain(`127.0.0.1:${port}`);
      expectNoSecret(metrics, r.stdout, r.stderr, w.stderr, dry.stdout, dry.stderr);
    } finally {
      await stopCli(worker, "SIGKILL");
      await stopCli(coord, "SIGKILL");
    }
  });

  const wrong = () => ({
    "ACL user, wrong password": `redis://gfuser:${WRONG_PASSWORD}@127.0.0.1:${port}`,
    "default user, wrong password": `redis://:${WRONG_PASSWORD}@127.0.0.1:${port}`,
    "no password": `redis://127.0.0.1:${port}`,
  });

  it("with wrong or missing credentials the coordinator, a worker and train fail fast with a clear message", async () => {
    const rows: string[] = [];
    for (const [what, url] of Object.entries(wrong())) {
      const commands: [string, string[]][] = [
        [
          "coordinator",
          ["coordinator", ...RUN, "--redis-url", url, "--run-id", "auth-wrong", "--metrics-port", "0"],
        ],
        ["worker", ["worker", "--redis-url", url, "--run-id", "auth-wrong", "--metrics-port", "0"]],
        ["train --workers 1", ["train", ...RUN, "--workers", "1", "--redis-url", url, "--metrics-port", "0"]],
      ];
      const results = await Promise.all(
        commands.map(async ([name, args]) => {
          const t0 = Date.now();
          const r = await procs.run(args);
          return { name, r, ms: Date.now() - t0 };
        }),
      );
      for (const { name, r, ms } of results) {
        rows.push(`${what} / ${name}: exit ${r.code} in ${ms} ms: ${r.stderr.trim().split("\n").pop()}`);
        expect(r.code, `${what} / ${name}: ${r.stderr}`).not.toBe(0);
        expect(r.code, `${what} / ${name}`).not.toBeNull();
        expect(ms, `${what} / ${name}`).toBeLessThan(FAST_MS);
        const expected = url.includes("@")
          ? /Redis rejected the credentials for user (gfuser|default) \(WRONGPASS\)/
          : /requires a password and none was given \(NOAUTH\)/;
        expect(r.stderr, `${what} / ${name}`).toMatch(expected);
        expect(r.stderr, `${what} / ${name}`).toContain(`127.0.0.1:${port}`);
        expectNoSecret(r.stdout, r.stderr);
      }
    }
    console.log(`[faults] wrong credentials:\n  ${rows.join("\n  ")}`);
  });
});
