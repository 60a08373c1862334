/**
 * The log lines a real process writes on stderr: JSON on a pipe (the default
 * anywhere but a terminal, and with --log-format json), one readable line per
 * record on a terminal (a real pseudo-terminal from util-linux's `script`) and
 * with --log-format text; every binding (run, role, ...) once per line.
 *
 * The process: a coordinator whose Redis does not answer. It logs that it
 * serves metrics, then stops with its one-line error, without any training.
 */
import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { BIN, runCli } from "./helpers/cli.js";
import { freePort } from "./helpers/redis.js";

async function coordinatorArgs(extra: string[] = []): Promise<string[]> {
  const [redisPort, metricsPort] = [await freePort(), await freePort()];
  return [
    "coordinator",
    "--run-id",
    "logs-test",
    "--redis-url",
    `redis://127.0.0.1:${redisPort}`,
    "--metrics-port",
    String(metricsPort),
    ...extra,
  ];
}

/** The lines of `text` that are log records (not the CLI's final `gradfleet: ...` error). */
function logLines(text: string): string[] {
  return text
    .split(/\r?\n/)
    .filter((l) => l.trim() !== "" && !l.startsWith("gradfleet: "))
    .map((l) => l.trimEnd());
}

/** Runs `gradfleet <args>` with stdout and stderr on a pseudo-terminal; resolves to what it printed. */
function onTerminal(args: string[]): Promise<string> {
  const command = [process.execPath, BIN, ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(" ");
  return new Promise((resolve, reject) => {
    const child = spawn("script", ["-qec", command, "/dev/null"], {
      env: { ...process.env, NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    child.stderr.on("data", (d) => {
      out += d;
    });
    child.on("error", reject);
    child.on("close", () => resolve(out));
  });
}

const READABLE =
  /^\d\d:\d\d:\d\d\.\d{3} INFO {2}coordinator \[run logs-test\] serving metrics url=http:\/\/\S+$/;

/** Runs a module snippet that logs through dist's createLogger; resolves to its stderr. */
async function logThrough(code: string): Promise<string> {
  const log = new URL("../dist/src/shared/log.js", import.meta.url).href;
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ["--input-type=module", "-e", `import { createLogger } from ${JSON.stringify(log)};\n${code}`],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let err = "";
    child.stderr.on("data", (d) => {
      err += d;
    });
    child.on("error", reject);
    child.on("close", () => resolve(err));
  });
}

describe.concurrent("log lines", () => {
  it("carry a binding once when a call passes it again (the run id was on every line twice)", async () => {
    const stderr = await logThrough(`
      const log = createLogger({ role: "coordinator", bindings: { run: "r1" }, format: "json" });
      log.info({ run: "r1", session: "s" }, "run published");
      log.info({ run: "r1" }, "again");`);
    const lines = logLines(stderr);
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(line.split('"run":').length - 1, line).toBe(1);
    expect(JSON.parse(lines[0])).toMatchObject({ run: "r1", session: "s", msg: "run published" });
  });

  it("are JSON on a pipe, with each binding once", async () => {
    const r = await runCli(await coordinatorArgs());
    expect(r.code).not.toBe(0);
    const lines = logLines(r.stderr);
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines) {
      const record = JSON.parse(line) as Record<string, unknown>;
      expect(record).toMatchObject({ role: "coordinator", run: "logs-test" });
      // JSON.parse keeps the last of repeated keys: count them in the text.
      for (const key of ["run", "role", "pid"])
        expect(line.split(`"${key}":`).length - 1, `${key} in ${line}`).toBe(1);
    }
    expect(lines.map((l) => JSON.parse(l).msg)).toContain("serving metrics");
  });

  it("are JSON with --log-format json even on a terminal", async () => {
    const lines = logLines(await onTerminal(await coordinatorArgs(["--log-format", "json"])));
    const metrics = lines.find((l) => l.includes("serving metrics"));
    expect(metrics, lines.join("\n")).toBeDefined();
    expect(JSON.parse(metrics!)).toMatchObject({
      role: "coordinator",
      run: "logs-test",
      msg: "serving metrics",
    });
  });

  it("are short readable lines on a terminal: time, level, role, run, message, fields", async () => {
    const lines = logLines(await onTerminal(await coordinatorArgs()));
    expect(
      lines.find((l) => l.includes("serving metrics")),
      lines.join("\n"),
    ).toMatch(READABLE);
    for (const line of lines) expect(line.startsWith("{"), line).toBe(false);
  });

  it("are readable lines with --log-format text on a pipe", async () => {
    const r = await runCli(await coordinatorArgs(["--log-format", "text"]));
    const lines = logLines(r.stderr);
    expect(
      lines.find((l) => l.includes("serving metrics")),
      r.stderr,
    ).toMatch(READABLE);
  });

  it("refuses an unknown --log-format, naming the values", async () => {
    const r = await runCli(["coordinator", "--log-format", "yaml", "--dry-run"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--log-format: .*auto.*text.*json/);
  });
});
