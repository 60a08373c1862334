/**
 * TLS: `rediss://` with `--redis-ca` works end to end (coordinator and a
 * worker process); without the CA the run fails fast with a clear message.
 * The certificates are made here with openssl; the server is Debian's
 * redis-server, which is built with TLS.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { EPHEMERAL_REDIS_ARGS } from "../src/shared/local-redis.js";
import { runCli, runFlags } from "./helpers/cli.js";
import { freePort } from "./helpers/redis.js";

const RUN = runFlags({ train: 2000, test: 500, epochs: 1, batch: 64, shards: 2 });

let dir: string;
let port: number;
let server: ChildProcess | undefined;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "gf-tls-"));
  const ssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  ssl(
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=gradfleet-test-ca",
  );
  ssl(
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "server.key",
    "-out",
    "server.csr",
    "-subj",
    "/CN=localhost",
  );
  await writeFile(join(dir, "ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  ssl(
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "server.pem",
    "-days",
    "2",
    "-extfile",
    "ext.cnf",
  );
  port = await freePort();
  server = spawn(
    "redis-server",
    [
      "--port",
      "0",
      "--tls-port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--tls-cert-file",
      join(dir, "server.pem"),
      "--tls-key-file",
      join(dir, "server.key"),
      "--tls-ca-cert-file",
      join(dir, "ca.pem"),
      "--tls-auth-clients",
      "no",
      ...EPHEMERAL_REDIS_ARGS,
    ],
    { stdio: "ignore" },
  );
  await new Promise((r) => setTimeout(r, 500));
});

afterAll(() => {
  server?.kill("SIGKILL");
});

it("rediss:// with --redis-ca trains with local workers and gives the in-process bits", async () => {
  const base = await runCli(["train", ...RUN, "--workers", "0"]);
  const url = `rediss://localhost:${port}`;
  const r = await runCli([
    "train",
    ...RUN,
    "--workers",
    "1",
    "--redis-url",
    url,
    "--redis-ca",
    join(dir, "ca.pem"),
  ]);
  expect(r.code, r.stderr).toBe(0);
  expect(r.json!.weightsSha256).toBe(base.json!.weightsSha256);
  expect(r.json!.workersSeen).toBe(1);
});

it("without the CA the coordinator fails fast and says why", async () => {
  const t0 = Date.now();
  const r = await runCli([
    "coordinator",
    ...RUN,
    "--redis-url",
    `rediss://localhost:${port}`,
    "--metrics-port",
    "0",
  ]);
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/cannot reach Redis at rediss:\/\/localhost:\d+: .*(self-signed|certificate)/i);
  expect(Date.now() - t0).toBeLessThan(30_000);
});
