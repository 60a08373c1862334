/**
 * Structured logs (pino) on stderr, so stdout stays free for progress lines
 * and the `--json` summary. Every line carries the process role and, where
 * known, the run id and worker id.
 */
import { destination, pino, type Logger } from "pino";

export type { Logger };

/** Creates the process logger. */
export function createLogger(opts: { level?: string; role: string; bindings?: Record<string, unknown> }): Logger {
  return pino(
    {
      level: opts.level ?? "info",
      base: { role: opts.role, pid: process.pid, ...opts.bindings },
      // Never let a Redis URL with a password into a log line.
      redact: { paths: ["redisUrl", "*.redisUrl", "password", "*.password"], censor: "***" },
    },
    destination({ dest: 2, sync: true }),
  );
}
