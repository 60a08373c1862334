/**
 * Vitest global setup: a container runtime for the testcontainers Redis of the
 * integration tests (test/helpers/redis.ts) on machines without Docker.
 *
 * - A machine with Docker (DOCKER_HOST, a Docker socket or
 *   ~/.testcontainers.properties): nothing to do; testcontainers finds it and
 *   pulls `redis:7` as usual.
 * - Otherwise, with Podman on PATH (CI here: scripts/ci/system-packages.sh
 *   installs it): starts `podman system service` on a private socket with
 *   scripts/ci/containers.conf (runc, limits the host allows), makes the
 *   `redis:7` image from this machine's redis-server when no registry can be
 *   reached (scripts/ci/podman-images.sh), and points the test processes at it:
 *   DOCKER_HOST, TESTCONTAINERS_RYUK_DISABLED (Ryuk has no image here; the
 *   teardown removes the containers instead) and TESTCONTAINERS_HOST_OVERRIDE
 *   (published ports on 127.0.0.1, so traffic stays on loopback).
 *
 * In CI (`CI=true`) every failure here fails the run: the container path is
 * required there. Elsewhere a failure is one line, and the tests use a
 * redis-server child process instead.
 *
 * Teardown removes every container this run labelled and stops the service.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { dockerHinted } from "./redis.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const CONTAINERS_CONF = join(ROOT, "scripts", "ci", "containers.conf");
const IMAGES_SCRIPT = join(ROOT, "scripts", "ci", "podman-images.sh");
/** The label testcontainers Redis containers of this run carry (set by redis.ts). */
export const SESSION_LABEL = "gradfleet.test-session";
const SERVICE_READY_MS = 60_000;

const run = promisify(execFile);

function onPath(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir !== "" && existsSync(join(dir, cmd))) return join(dir, cmd);
  }
  return undefined;
}

/** GET /_ping on the Docker-API socket: true when it answers OK. */
function ping(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ socketPath, path: "/_ping", timeout: 2_000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(false));
    req.end();
  });
}

let service: ChildProcess | undefined;
let dir: string | undefined;
let session: string | undefined;

async function stopAll(): Promise<void> {
  const env = { ...process.env, CONTAINERS_CONF };
  if (session) {
    // Containers a test forgot to stop (Ryuk would have removed them).
    const ids = await run("podman", ["ps", "-aq", "--filter", `label=${SESSION_LABEL}=${session}`], { env })
      .then((r) => r.stdout.split("\n").filter(Boolean))
      .catch(() => []);
    if (ids.length > 0) await run("podman", ["rm", "-f", "-t", "0", ...ids], { env }).catch(() => {});
  }
  const proc = service;
  service = undefined;
  if (proc && proc.exitCode === null && proc.signalCode === null) {
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill("SIGTERM");
    const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
}

async function startPodman(podman: string): Promise<void> {
  dir = mkdtempSync(join(tmpdir(), "gradfleet-podman-"));
  const socket = join(dir, "podman.sock");
  const env = { ...process.env, CONTAINERS_CONF };
  // setpriv: the service dies with this process, even when it is killed.
  const setpriv = onPath("setpriv");
  const argv = [podman, "system", "service", "--time=0", `unix://${socket}`];
  const [cmd, ...args] = setpriv ? [setpriv, "--pdeathsig", "TERM", ...argv] : argv;
  let output = "";
  const proc = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  service = proc;
  for (const s of [proc.stdout, proc.stderr]) s.on("data", (d) => (output = (output + d).slice(-2_000)));
  const deadline = Date.now() + SERVICE_READY_MS;
  while (!(existsSync(socket) && (await ping(socket)))) {
    if (proc.exitCode !== null || proc.signalCode !== null)
      throw new Error(`podman system service exited (${proc.exitCode ?? proc.signalCode}): ${output.trim()}`);
    if (Date.now() > deadline)
      throw new Error(`podman system service did not answer on ${socket} in 60 s: ${output.trim()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  // redis:7 from this machine's redis-server, unless the image is already there (pulled or made).
  await run("bash", [IMAGES_SCRIPT, "redis"], { env }).catch((err: Error & { stderr?: string }) => {
    throw new Error(`cannot make the redis:7 image: ${err.stderr?.trim() || err.message}`);
  });
  session = randomBytes(6).toString("hex");
  process.env.DOCKER_HOST = `unix://${socket}`;
  process.env.TESTCONTAINERS_RYUK_DISABLED = "true";
  process.env.TESTCONTAINERS_HOST_OVERRIDE = "127.0.0.1";
  process.env.GRADFLEET_TEST_CONTAINER_SESSION = session;
  console.log(`[test-redis] podman system service on ${socket} (Docker API) for the testcontainers Redis`);
}

export async function setup(): Promise<void> {
  const forced = process.env.GRADFLEET_TEST_REDIS;
  if (forced !== undefined && forced !== "testcontainers") return;
  if (dockerHinted()) return;
  const ci = process.env.CI === "true";
  const podman = onPath("podman");
  if (!podman) {
    if (ci || forced === "testcontainers")
      throw new Error(
        "no container runtime for the testcontainers Redis: no Docker socket and podman is not on PATH " +
          "(scripts/ci/system-packages.sh installs podman and runc on Debian)",
      );
    return;
  }
  try {
    await startPodman(podman);
  } catch (err) {
    await stopAll();
    if (ci || forced === "testcontainers") throw err;
    console.log(`[test-redis] podman did not start, the tests use redis-server: ${(err as Error).message}`);
  }
}

export async function teardown(): Promise<void> {
  await stopAll();
}
