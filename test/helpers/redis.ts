/**
 * A real Redis for integration tests, one independent server per call.
 *
 * Where it comes from, first that works:
 * 1. a `redis:7` container through testcontainers, where a container runtime
 *    answers: Docker on a user's machine, or the Podman service that the
 *    global setup (test/helpers/container-runtime.ts) starts where there is no
 *    Docker (CI). Detected without loading testcontainers at all when no
 *    runtime socket or configuration exists, so such machines pay nothing;
 * 2. a `redis-server` child process on a free loopback port, when it is on PATH;
 * 3. the server named by `REDIS_URL` (shared, so no restart/kill and no
 *    password or ACL options).
 * `GRADFLEET_TEST_REDIS=testcontainers|redis-server|REDIS_URL` forces one.
 * In CI (`CI=true`, no GRADFLEET_TEST_REDIS) the container is required: a
 * runtime that does not answer or a container that does not start fails the
 * test instead of falling back to redis-server.
 *
 * Every server runs without persistence and with `maxmemory-policy
 * noeviction` (what BullMQ needs), so a restart comes back empty.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createConnection } from "node:net";
import { homedir, userInfo } from "node:os";
import { delimiter, join } from "node:path";
import { freePort } from "../../src/shared/local-redis.js";

/** A Redis server owned by one test (or shared, for kind `REDIS_URL`). */
export interface TestRedis {
  /** Connection URL, with the credentials asked for (the ACL user's, when one was asked for). */
  url: string;
  kind: "testcontainers" | "redis-server" | "REDIS_URL";
  port?: number;
  /** Stops the server and frees its port (a no-op for `REDIS_URL`). */
  stop(): Promise<void>;
  /** Stops and starts again on the SAME port, empty. Absent for `REDIS_URL`. */
  restart?(): Promise<void>;
  /** Kills the server abruptly (SIGKILL), as a crash would. Absent for `REDIS_URL`. */
  kill?(): Promise<void>;
}

/** What the server should require of its clients. */
export interface StartTestRedisOptions {
  /** `requirepass`: the `default` user's password. */
  password?: string;
  /** An ACL user with every permission; the returned URL logs in as this user. */
  aclUser?: { name: string; password: string };
  /** `maxmemory` (e.g. "2mb"): a Redis that fills up, for tests of what a full Redis does. */
  maxmemory?: string;
}

type Kind = TestRedis["kind"];

const READY_TIMEOUT_MS = 15_000;
const RUNTIME_PROBE_TIMEOUT_MS = 2_000;

const logged = new Set<string>();
/** Prints which Redis the tests use, once per process and kind. */
function logOnce(kind: Kind, detail: string): void {
  if (logged.has(kind)) return;
  logged.add(kind);
  console.log(`[test-redis] using ${detail}`);
}

/** A port that was free a moment ago (the same helper the quick start uses). */
export { freePort };

/** The absolute path of `cmd` on PATH, or undefined. */
function findOnPath(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir !== "" && existsSync(join(dir, cmd))) return join(dir, cmd);
  }
  return undefined;
}

/** Server arguments shared by the container and the child process. */
function serverArgs(opts: StartTestRedisOptions): string[] {
  const args = ["--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"];
  if (opts.password !== undefined) args.push("--requirepass", opts.password);
  if (opts.maxmemory !== undefined) args.push("--maxmemory", opts.maxmemory);
  if (opts.aclUser !== undefined) {
    args.push("--user", opts.aclUser.name, "on", `>${opts.aclUser.password}`, "~*", "&*", "+@all");
  }
  return args;
}

/** The URL a test connects with: the ACL user if there is one, else the password. */
function urlFor(host: string, port: number, opts: StartTestRedisOptions): string {
  const url = new URL(`redis://${host}:${port}`);
  if (opts.aclUser !== undefined) {
    url.username = encodeURIComponent(opts.aclUser.name);
    url.password = encodeURIComponent(opts.aclUser.password);
  } else if (opts.password !== undefined) {
    url.password = encodeURIComponent(opts.password);
  }
  return url.toString().replace(/\/$/, "");
}

// ---------------------------------------------------------------- containers

let runtimeProbe: Promise<boolean> | undefined;
let containersBroken = false;

/**
 * True when something points at a container runtime: testcontainers 11
 * looks at DOCKER_HOST, ~/.testcontainers.properties and these sockets, in
 * that order. Without any of them its probe would fail anyway, so skip it.
 */
export function dockerHinted(): boolean {
  if (process.env.DOCKER_HOST) return true;
  const home = homedir();
  const candidates = [
    join(home, ".testcontainers.properties"),
    "/var/run/docker.sock",
    join(home, ".docker", "run", "docker.sock"),
    join(home, ".docker", "desktop", "docker.sock"),
    join("/run", "user", String(userInfo().uid), "docker.sock"),
  ];
  if (process.env.XDG_RUNTIME_DIR) candidates.push(join(process.env.XDG_RUNTIME_DIR, "docker.sock"));
  return candidates.some((path) => existsSync(path));
}

/** Whether testcontainers finds a runtime that answers, within 2 s; asked once per process. */
function containerRuntimeAvailable(): Promise<boolean> {
  runtimeProbe ??= (async () => {
    if (!dockerHinted()) return false;
    const { getContainerRuntimeClient } = await import("testcontainers");
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => {
      // Where the container is required, a busy machine gets longer to answer.
      const required = process.env.CI === "true" || process.env.GRADFLEET_TEST_REDIS === "testcontainers";
      timer = setTimeout(() => resolve(false), required ? 30_000 : RUNTIME_PROBE_TIMEOUT_MS);
    });
    const probe = getContainerRuntimeClient().then(
      () => true,
      () => false,
    );
    const found = await Promise.race([probe, timeout]);
    clearTimeout(timer);
    return found;
  })();
  return runtimeProbe;
}

async function startContainer(opts: StartTestRedisOptions): Promise<TestRedis> {
  const { GenericContainer, Wait } = await import("testcontainers");
  // A fixed host port (rather than a random mapping) so restart() keeps it.
  const port = await freePort();
  const session = process.env.GRADFLEET_TEST_CONTAINER_SESSION;
  const launch = () =>
    new GenericContainer("redis:7")
      .withCommand(["redis-server", ...serverArgs(opts)])
      // The global setup removes what a test forgot to stop (Ryuk is off with Podman).
      .withLabels(session ? { "gradfleet.test-session": session } : {})
      .withExposedPorts({ container: 6379, host: port })
      .withWaitStrategy(Wait.forLogMessage("Ready to accept connections"))
      .withStartupTimeout(60_000)
      .start();
  let container = await launch();
  const host = container.getHost();
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await container.stop({ timeout: 0 });
  };
  return {
    url: urlFor(host, port, opts),
    kind: "testcontainers",
    port,
    stop,
    // A new container on the same host port, so it starts empty. Not
    // `container.restart()`: on Podman its wait for the "Ready" log line
    // reads the logs since the restart at one-second resolution and once
    // missed the line (60 s timeout in CI).
    restart: async () => {
      await container.stop({ timeout: 0 });
      container = await launch();
    },
    kill: stop,
  };
}

// ---------------------------------------------------------- redis-server child

/** Child servers still running, killed when this process exits however it exits. */
const children = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const child of children) child.kill("SIGKILL");
  });
}

/** Resolves when something on `port` answers PING (NOAUTH counts: the server is up). */
function pingOnce(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.on("error", () => done(false));
    socket.on("connect", () => socket.write("PING\r\n"));
    socket.on("data", (data) => done(/^(\+PONG|-NOAUTH)/.test(data.toString())));
  });
}

/** Output of a child server, kept for error messages. */
function captureOutput(child: ChildProcess): () => string {
  let output = "";
  const keep = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-4_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  return () => output.trim();
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

/** Starts redis-server on `port` and waits until it answers; rejects with its output if it dies. */
async function spawnServer(binary: string, port: number, opts: StartTestRedisOptions): Promise<ChildProcess> {
  const args = [binary, "--port", String(port), "--bind", "127.0.0.1", ...serverArgs(opts)];
  // setpriv makes the kernel kill the server when its parent dies, even by SIGKILL,
  // where no exit hook runs.
  const setpriv = findOnPath("setpriv");
  const [cmd, ...cmdArgs] = setpriv ? [setpriv, "--pdeathsig", "KILL", ...args] : args;
  const child = spawn(cmd, cmdArgs, { stdio: ["ignore", "pipe", "pipe"] });
  // A test that forgets stop() must not keep the process alive: the exit hook kills the server.
  child.unref();
  for (const stream of [child.stdout, child.stderr]) (stream as { unref?: () => void } | null)?.unref?.();
  installExitHook();
  children.add(child);
  child.once("exit", () => children.delete(child));
  const output = captureOutput(child);
  let spawnError: Error | undefined;
  child.once("error", (err) => {
    spawnError = err;
  });
  // "close" comes after the output streams end, so the output is complete by then.
  let closed = false;
  const whenClosed = new Promise<void>((resolve) => child.once("close", () => resolve()));
  void whenClosed.then(() => {
    closed = true;
  });

  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (spawnError) throw new Error(`cannot start redis-server: ${spawnError.message}`);
    if (closed || child.exitCode !== null || child.signalCode !== null) {
      await whenClosed;
      throw new Error(
        `redis-server on port ${port} exited (${child.exitCode ?? child.signalCode}): ${output()}`,
      );
    }
    if (await pingOnce(port)) return child;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  child.kill("SIGKILL");
  throw new Error(
    `redis-server on port ${port} did not answer PING within ${READY_TIMEOUT_MS} ms: ${output()}`,
  );
}

async function startChildServer(binary: string, opts: StartTestRedisOptions): Promise<TestRedis> {
  // Another test may grab the "free" port before the server binds it: try a few.
  let child: ChildProcess | undefined;
  let port = 0;
  for (let attempt = 1; child === undefined; attempt++) {
    port = await freePort();
    try {
      child = await spawnServer(binary, port, opts);
    } catch (err) {
      if (attempt >= 3 || !/already in use/i.test((err as Error).message)) throw err;
    }
  }

  let current: ChildProcess | undefined = child;
  const halt = async (signal: NodeJS.Signals): Promise<void> => {
    const proc = current;
    current = undefined;
    if (!proc) return;
    proc.kill(signal);
    const timer = setTimeout(() => proc.kill("SIGKILL"), 3_000);
    await exited(proc);
    clearTimeout(timer);
  };
  return {
    url: urlFor("127.0.0.1", port, opts),
    kind: "redis-server",
    port,
    stop: () => halt("SIGTERM"),
    kill: () => halt("SIGKILL"),
    restart: async () => {
      await halt("SIGTERM");
      current = await spawnServer(binary, port, opts);
    },
  };
}

// --------------------------------------------------------------------- entry

function fromEnvUrl(opts: StartTestRedisOptions): TestRedis {
  const url = process.env.REDIS_URL;
  if (!url) {
    throw new Error(
      "no Redis for tests: no container runtime answers, redis-server is not on PATH, and REDIS_URL is not set " +
        "(install redis-server, e.g. apt-get install redis-server, or set REDIS_URL)",
    );
  }
  if (opts.password !== undefined || opts.aclUser !== undefined || opts.maxmemory !== undefined) {
    throw new Error(
      "startTestRedis: password, ACL and maxmemory options need a server the helper starts; REDIS_URL is shared",
    );
  }
  logOnce("REDIS_URL", "REDIS_URL (a shared server: tests are not isolated from each other)");
  return { url, kind: "REDIS_URL", stop: async () => {} };
}

/**
 * Starts an independent Redis for one test (see the module comment for
 * where it comes from). Always `stop()` it in `afterAll`/`afterEach`; child
 * servers are also killed when the test process exits.
 */
export async function startTestRedis(opts: StartTestRedisOptions = {}): Promise<TestRedis> {
  const forced = process.env.GRADFLEET_TEST_REDIS as Kind | undefined;
  if (forced !== undefined && !["testcontainers", "redis-server", "REDIS_URL"].includes(forced)) {
    throw new Error(
      `GRADFLEET_TEST_REDIS must be testcontainers, redis-server or REDIS_URL, got "${String(forced)}"`,
    );
  }

  // CI runs the container path for real: no silent fallback there.
  const required = forced === "testcontainers" || (forced === undefined && process.env.CI === "true");
  if (required || (forced === undefined && !containersBroken)) {
    if (required && !(await containerRuntimeAvailable())) {
      throw new Error(
        "the testcontainers Redis is required here (CI=true or GRADFLEET_TEST_REDIS=testcontainers) " +
          "but no container runtime answers (no Docker; the global setup starts Podman when it is installed)",
      );
    }
    if (required || (await containerRuntimeAvailable())) {
      try {
        const redis = await startContainer(opts);
        logOnce("testcontainers", "a redis:7 container (testcontainers)");
        return redis;
      } catch (err) {
        if (required) throw err;
        // E.g. the image cannot be pulled: fall back, and do not try again.
        containersBroken = true;
        console.log(
          `[test-redis] container runtime found but redis:7 did not start: ${(err as Error).message}`,
        );
      }
    }
  }

  const binary = findOnPath("redis-server");
  if (forced === "redis-server" || (forced === undefined && binary !== undefined)) {
    if (binary === undefined)
      throw new Error("GRADFLEET_TEST_REDIS=redis-server but redis-server is not on PATH");
    const redis = await startChildServer(binary, opts);
    logOnce("redis-server", `redis-server (${binary}), one child process per test server`);
    return redis;
  }

  return fromEnvUrl(opts);
}
