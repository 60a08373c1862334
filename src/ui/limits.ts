/**
 * What the live page may take from the process that trains: it is a view,
 * so whatever its clients do (open thousands of connections, send half a
 * request, never read their stream) must not cost the run the descriptors,
 * memory or time it needs for its own work (checkpoints, the model file,
 * Redis).
 */
import { readFileSync } from "node:fs";

/** Stream (`/events`) clients at once; one per open page, a few pages at most in practice. */
export const MAX_STREAM_CLIENTS = 32;

/** Connections the page never exceeds, whatever the descriptor limit. */
const MAX_CONNECTIONS = 256;
/** Descriptors left to the run itself: its files, Redis connections, worker pipes, the metrics server. */
const RESERVED_DESCRIPTORS = 128;
/** The page gets at least this many connections, however low the limit. */
const MIN_CONNECTIONS = 8;

/** A request's headers must arrive within this (a half-sent request holds a descriptor). */
export const HEADERS_TIMEOUT_MS = 10_000;
/** A whole request (e.g. a /predict body) must arrive within this. */
export const REQUEST_TIMEOUT_MS = 30_000;
/** A connection with no traffic is closed after this (streams excepted: they are written to 4 times a second). */
export const IDLE_TIMEOUT_MS = 30_000;
/** How often the server looks for requests past their timeouts. */
export const TIMEOUT_CHECK_MS = 1_000;

/**
 * How many connections the page may hold: {@link MAX_CONNECTIONS}, fewer
 * when the soft descriptor limit leaves less than {@link RESERVED_DESCRIPTORS}
 * besides (e.g. `ulimit -n 256` gives 128).
 */
export function maxConnections(limit = openFilesLimit()): number {
  if (limit === undefined) return MAX_CONNECTIONS;
  return Math.max(MIN_CONNECTIONS, Math.min(MAX_CONNECTIONS, limit - RESERVED_DESCRIPTORS));
}

/**
 * The soft limit on open descriptors (`ulimit -n`), from /proc/self/limits;
 * undefined where there is no such file (not Linux) or no limit.
 */
export function openFilesLimit(): number | undefined {
  let text: string;
  try {
    text = readFileSync("/proc/self/limits", "utf8");
  } catch {
    return undefined;
  }
  const m = text.match(/^Max open files\s+(\d+|unlimited)/m);
  return m && m[1] !== "unlimited" ? Number(m[1]) : undefined;
}

/**
 * A stream client that has more than this queued and unsent is dropped: it
 * is not reading (or cannot keep up), and its queue would grow in the
 * process's memory for as long as the run lasts. At least four frames of
 * the largest event, so a client one frame behind is never dropped.
 */
export function maxBehindBytes(largestFrame: number): number {
  return Math.max(1_000_000, 4 * largestFrame);
}
