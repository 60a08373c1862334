/**
 * Structured logs (pino) on stderr, so stdout stays free for progress lines
 * and the `--json` summary. Every line carries the process role and, where
 * known, the run id and worker id.
 *
 * On a terminal the same records are printed as one readable line each
 * (`12:04:05.123 WARN  worker local-1 [run mnist] shard deadline passed step=3`);
 * anywhere else (containers, files, pipes) they stay JSON lines for the log
 * collector. `--log-format text|json` forces one.
 */
import { writeSync } from "node:fs";
import { inspect } from "node:util";
import { destination, type Logger, pino } from "pino";

export type { Logger };

/**
 * Creates the process logger. `format` "auto" (the default) writes readable
 * lines when stderr is a terminal and JSON lines anywhere else; "text" and
 * "json" force one.
 *
 * The bindings (role, pid, run, worker) are on every line once: a call that
 * passes one of them again with the same value (`log.info({ run }, ...)`) does
 * not repeat it, since JSON with a key twice is ambiguous to log collectors.
 */
export function createLogger(opts: {
  level?: string;
  role: string;
  bindings?: Record<string, unknown>;
  format?: "auto" | "text" | "json";
}): Logger {
  const format = opts.format ?? "auto";
  const pretty = format === "text" || (format === "auto" && Boolean(process.stderr.isTTY));
  const color = pretty && Boolean(process.stderr.isTTY) && !process.env.NO_COLOR;
  const base: Record<string, unknown> = { role: opts.role, pid: process.pid, ...opts.bindings };
  return pino(
    {
      level: opts.level ?? "info",
      base,
      // Never let a Redis URL with a password into a log line.
      redact: { paths: ["redisUrl", "*.redisUrl", "password", "*.password"], censor: "***" },
      formatters: {
        // Drops fields a call repeats from the bindings (same value), so no key appears twice.
        log: (fields) => withoutRepeats(fields, base),
      },
    },
    pretty
      ? // Synchronous like the JSON destination, so lines and the progress bar never interleave.
        { write: (line: string) => writeSync(2, `${formatLogLine(line, { color })}\n`) }
      : destination({ dest: 2, sync: true }),
  );
}

/** `fields` without the keys whose value equals the binding of the same name. */
function withoutRepeats(
  fields: Record<string, unknown>,
  base: Record<string, unknown>,
): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const key of Object.keys(fields)) {
    if (key in base && Object.is(fields[key], base[key])) {
      out ??= { ...fields };
      delete out[key];
    }
  }
  return out ?? fields;
}

const LEVELS: Record<number, { name: string; color: string }> = {
  10: { name: "TRACE", color: "90" },
  20: { name: "DEBUG", color: "90" },
  30: { name: "INFO", color: "32" },
  40: { name: "WARN", color: "33" },
  50: { name: "ERROR", color: "31" },
  60: { name: "FATAL", color: "35" },
};

/** Fields shown in the line's head rather than as `key=value`. */
const HEAD_FIELDS = new Set(["level", "time", "msg", "role", "pid", "run", "worker", "hostname"]);

/**
 * One pino JSON record as a human-readable line:
 * `HH:MM:SS.mmm LEVEL role [worker] [run RUN] message key=value ...`.
 * A line that is not a JSON object is returned as it is.
 */
export function formatLogLine(json: string, opts: { color?: boolean } = {}): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.replace(/\n$/, "");
  }
  if (rec === null || typeof rec !== "object" || Array.isArray(rec)) return json.replace(/\n$/, "");
  const paint = (code: string, text: string) => (opts.color ? `\u001b[${code}m${text}\u001b[0m` : text);
  const level = LEVELS[Number(rec.level)] ?? { name: String(rec.level ?? "?").toUpperCase(), color: "0" };
  const time = typeof rec.time === "number" ? clock(new Date(rec.time)) : "";
  const who = [rec.role, rec.worker].filter((v) => v !== undefined && v !== "").join(" ");
  const run = rec.run !== undefined ? ` [run ${String(rec.run)}]` : "";
  const fields = Object.entries(rec).filter(([k]) => !HEAD_FIELDS.has(k));
  // Multi-line strings (stack traces) go below the line, indented, instead of as one escaped blob.
  const multiline = fields.filter(([, v]) => typeof v === "string" && v.includes("\n"));
  const rest = fields.filter((f) => !multiline.includes(f)).map(([k, v]) => `${k}=${showValue(v)}`);
  const msg = typeof rec.msg === "string" ? rec.msg : "";
  const head = `${paint("90", time)} ${paint(level.color, level.name.padEnd(5))} ${paint("36", who)}${run}`;
  const line = [head, msg, ...rest].filter((s) => s !== "").join(" ");
  const below = multiline.map(([k, v]) => `\n  ${k}: ${String(v).trimEnd().replace(/\n/g, "\n    ")}`);
  return line + below.join("");
}

function clock(d: Date): string {
  const two = (n: number) => String(n).padStart(2, "0");
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

/** Longest an object field gets on a readable line (the JSON format keeps it whole). */
const MAX_OBJECT_CHARS = 80;

/** Strings bare unless they contain spaces or quotes; objects compact, cut at 80 characters. */
function showValue(v: unknown): string {
  if (typeof v === "string") return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (typeof v === "number" || typeof v === "boolean" || v === null) return String(v);
  const text = inspect(v, { breakLength: Number.POSITIVE_INFINITY, depth: 4, compact: true });
  return text.length > MAX_OBJECT_CHARS ? `${text.slice(0, MAX_OBJECT_CHARS - 1)}…` : text;
}
