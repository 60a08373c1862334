/**
 * Redis connections for the cluster.
 *
 * Two roles, because BullMQ needs two behaviours (see BullMQ's "Connections",
 * "Going to production" and "Failing fast when Redis is down"):
 *
 * - `worker`: connections that a BullMQ Worker (or QueueEvents) blocks on.
 *   BullMQ requires `maxRetriesPerRequest: null` there, so a command waits
 *   across reconnects instead of failing; they reconnect with backoff forever,
 *   so a worker survives a Redis restart and picks up jobs again.
 * - `producer`: the coordinator's Queue and its plain commands. These fail
 *   fast: with `enableOfflineQueue: false` a command sent while disconnected
 *   throws at once instead of waiting for a reconnect (BullMQ's recommendation
 *   for producers), and `maxRetriesPerRequest` caps how many reconnects a
 *   command already in flight rides out. The client still reconnects in the
 *   background, so a later command works once Redis is back. Because commands
 *   before the first `ready` throw too, call {@link waitForRedis} first
 *   (BullMQ's Queue waits for `ready` by itself).
 *
 * Wrong credentials never fix themselves: a client made by
 * {@link connectRedis} stops reconnecting after WRONGPASS / NOAUTH / NOPERM,
 * and {@link waitForRedis} rejects at once with a message that says so.
 */

import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { Redis, type RedisOptions } from "ioredis";

/** Which kind of connection: see the module comment. */
export type RedisRole = "worker" | "producer";

/** Options for {@link redisOptionsFromUrl}. */
export interface RedisUrlOptions {
  /** PEM file with the CA that signed the server's certificate (`rediss://` only). */
  caFile?: string;
  role: RedisRole;
}

/** Options for {@link connectRedis}. */
export interface ConnectRedisOptions extends RedisUrlOptions {
  /** Client name shown by `CLIENT LIST` (for example `gf-worker-3`). */
  name?: string;
}

const DEFAULT_PORT = 6379;

/** Redis error codes that mean "these credentials will never work": retrying is pointless. */
const AUTH_ERROR = /\b(WRONGPASS|NOAUTH|NOPERM)\b/;
/** TLS failures that no retry can fix (an untrusted or mismatched certificate). */
const TLS_ERROR = /self[- ]signed certificate|unable to verify|certificate|ERR_TLS_CERT/i;

/** A URL object that does not leak the password when printed. */
function parseUrl(url: string): URL {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`invalid Redis URL "${redactUrl(url)}": expected redis://[user:pass@]host[:port][/db]`);
  }
  if (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") {
    throw new Error(
      `invalid Redis URL "${redactUrl(url)}": scheme must be redis:// or rediss:// (TLS), got ${parsed.protocol}//`,
    );
  }
  return parsed;
}

/**
 * The URL with its password (and any query values or fragment) replaced by
 * `***`, for logs and error messages. Strings that are not URLs get anything
 * that looks like credentials (`://user:secret@`, `:secret@`) masked, so a
 * typo in a URL cannot leak its password either.
 */
export function redactUrl(text: string): string {
  try {
    const url = new URL(text);
    // Query values too: `?password=` is refused, but the refusal quotes the URL.
    const query = [...url.searchParams.keys()];
    if (url.password === "" && query.length === 0 && url.hash === "") return text;
    if (url.password !== "") url.password = "***";
    if (query.length > 0) url.search = query.map((k) => `${encodeURIComponent(k)}=***`).join("&");
    if (url.hash !== "") url.hash = "***";
    return url.toString();
  } catch {
    const withUser = text.replace(/:\/\/([^:@/]*):[^@/]*@/, "://$1:***@");
    return withUser !== text ? withUser : text.replace(/:[^:/@]*@/, ":***@");
  }
}

/** Reconnect delay for blocking connections: BullMQ's own default, 1 s to 20 s. */
function workerBackoff(times: number): number {
  return Math.max(Math.min(Math.exp(times), 20_000), 1_000);
}

/** Reconnect delay for producer connections: quick at first, then every 5 s. */
function producerBackoff(times: number): number {
  return Math.min(100 * 2 ** times, 5_000);
}

/**
 * ioredis options for a Redis URL.
 *
 * Understands `redis://user:pass@host:port/db` and `rediss://` (TLS; the CA
 * from `caFile`, else the system's CAs); the port defaults to 6379, the host
 * to 127.0.0.1, the db to 0. User and password may be percent-encoded.
 *
 * `opts.role` defaults to `producer` (fail fast); BullMQ Workers need `worker`.
 *
 * @throws Error naming the (redacted) URL when it is not a Redis URL, the db
 *   is not a non-negative integer, or `caFile` cannot be read.
 */
export function redisOptionsFromUrl(url: string, opts: RedisUrlOptions = { role: "producer" }): RedisOptions {
  const parsed = parseUrl(url);
  const shown = redactUrl(url);

  const dbText = parsed.pathname.replace(/^\//, "");
  if (dbText !== "" && !/^\d+$/.test(dbText)) {
    throw new Error(`invalid Redis URL "${shown}": database "${dbText}" must be a non-negative integer`);
  }
  const port = parsed.port === "" ? DEFAULT_PORT : Number(parsed.port);
  // URL keeps IPv6 literals in brackets; sockets want them bare.
  const host = parsed.hostname === "" ? "127.0.0.1" : parsed.hostname.replace(/^\[(.*)\]$/, "$1");

  const options: RedisOptions = { host, port, db: dbText === "" ? 0 : Number(dbText) };
  if (parsed.username !== "") options.username = decodeURIComponent(parsed.username);
  if (parsed.password !== "") options.password = decodeURIComponent(parsed.password);

  if (parsed.protocol === "rediss:") {
    let ca: Buffer | undefined;
    if (opts.caFile !== undefined) {
      try {
        ca = readFileSync(opts.caFile);
      } catch (err) {
        throw new Error(`cannot read Redis CA file "${opts.caFile}": ${(err as Error).message}`);
      }
    }
    // SNI takes a host name only; Node warns when it is given an IP address.
    const servername = isIP(host) === 0 ? host : undefined;
    options.tls = { ...(servername && { servername }), ...(ca && { ca }) };
  } else if (opts.caFile !== undefined) {
    throw new Error(`a Redis CA file was given but "${shown}" is not a rediss:// (TLS) URL`);
  }

  if (opts.role === "worker") {
    // BullMQ requires null for blocking connections (it overrides or rejects anything else).
    options.maxRetriesPerRequest = null;
    options.enableOfflineQueue = true;
    options.retryStrategy = workerBackoff;
  } else {
    options.maxRetriesPerRequest = 1;
    options.enableOfflineQueue = false;
    options.connectTimeout = 5_000;
    options.retryStrategy = producerBackoff;
  }
  return options;
}

/** Last connection error per client, for the message of {@link waitForRedis}. */
const lastErrors = new WeakMap<Redis, Error>();

/**
 * Opens an ioredis client for `url` with the options of its role (see
 * {@link redisOptionsFromUrl}). It connects in the background: await
 * {@link waitForRedis} before the first command.
 *
 * The client gets an `error` listener that remembers the last error (so
 * ioredis does not print every failed reconnect to stderr); attach your own
 * listener to log them. After an authentication error (WRONGPASS, NOAUTH,
 * NOPERM) it stops reconnecting and ends.
 */
export function connectRedis(url: string, opts: ConnectRedisOptions): Redis {
  const options = redisOptionsFromUrl(url, opts);
  const backoff = options.retryStrategy!;
  let authFailed = false;
  options.retryStrategy = (times) => (authFailed ? null : backoff(times));
  if (opts.name !== undefined) options.connectionName = opts.name;
  const client = new Redis(options);
  client.on("error", (err: Error) => {
    lastErrors.set(client, err);
    if (AUTH_ERROR.test(err.message)) authFailed = true;
  });
  return client;
}

/** `redis://host:port` (or `rediss://`) of a client, without credentials. */
function describeClient(client: Redis): string {
  const { host, port, tls } = client.options;
  const shownHost = host?.includes(":") ? `[${host}]` : (host ?? "127.0.0.1");
  return `${tls ? "rediss" : "redis"}://${shownHost}:${port ?? DEFAULT_PORT}`;
}

/** The clear message for an authentication or permission error. */
function authMessage(client: Redis, err: Error): string {
  const where = describeClient(client);
  const user = client.options.username ?? "default";
  const code = AUTH_ERROR.exec(err.message)?.[1];
  if (code === "WRONGPASS") return `Redis rejected the credentials for user ${user} (WRONGPASS) at ${where}`;
  if (code === "NOAUTH") return `Redis at ${where} requires a password and none was given (NOAUTH)`;
  return `Redis user ${user} at ${where} is not allowed to run a command the client needs (NOPERM): ${err.message}`;
}

/**
 * Resolves once the server answers `PING`; rejects after `timeoutMs` with
 * `cannot reach Redis at redis://host:port: <last error>`, or at once with a
 * message naming the user for authentication errors (WRONGPASS, NOAUTH,
 * NOPERM), which waiting cannot fix. Neither closes the client: the caller
 * owns it.
 */
export function waitForRedis(client: Redis, timeoutMs: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const finish = (err?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client.off("ready", onReady);
      client.off("error", onError);
      client.off("end", onEnd);
      if (err) reject(err);
      else resolve();
    };
    const fail = (err: Error | undefined, fallback: string): void => {
      if (err && AUTH_ERROR.test(err.message)) finish(new Error(authMessage(client, err)));
      else finish(new Error(`cannot reach Redis at ${describeClient(client)}: ${err?.message ?? fallback}`));
    };
    const onReady = (): void => {
      client.ping().then(
        () => finish(),
        (err: Error) => fail(err, "PING failed"),
      );
    };
    const onError = (err: Error): void => {
      // Connection errors are retried by the client; only credentials and
      // certificates are final (waiting will not make them valid).
      if (AUTH_ERROR.test(err.message) || TLS_ERROR.test(err.message)) fail(err, "");
    };
    const onEnd = (): void => fail(lastErrors.get(client), "the connection was closed");
    const timer = setTimeout(
      () => fail(lastErrors.get(client), `no answer within ${timeoutMs} ms`),
      timeoutMs,
    );

    client.on("ready", onReady);
    client.on("error", onError);
    client.on("end", onEnd);
    const last = lastErrors.get(client);
    if (client.status === "ready") onReady();
    else if (client.status === "end") onEnd();
    else if (last && AUTH_ERROR.test(last.message)) fail(last, "");
  });
}

/**
 * Checks the server settings BullMQ depends on. Returns a warning to log, or
 * `undefined` when all is well: BullMQ loses jobs unless `maxmemory-policy`
 * is `noeviction`. Where `CONFIG GET` is refused (an ACL without `+config`,
 * or a managed Redis that renames it), the check is skipped and the returned
 * warning says so instead of failing.
 */
export async function checkRedisConfig(client: Redis): Promise<string | undefined> {
  let reply: unknown;
  try {
    reply = await client.config("GET", "maxmemory-policy");
  } catch (err) {
    return `could not check maxmemory-policy of Redis at ${describeClient(client)} (${(err as Error).message}); BullMQ needs it to be noeviction`;
  }
  const pairs = Array.isArray(reply) ? (reply as string[]) : [];
  const policy = pairs[pairs.indexOf("maxmemory-policy") + 1];
  if (policy === undefined || pairs.indexOf("maxmemory-policy") < 0) {
    return `Redis at ${describeClient(client)} did not report maxmemory-policy; BullMQ needs it to be noeviction`;
  }
  if (policy !== "noeviction") {
    return `Redis at ${describeClient(client)} has maxmemory-policy ${policy}: it may evict queue keys and lose jobs; BullMQ needs noeviction (CONFIG SET maxmemory-policy noeviction)`;
  }
  return undefined;
}

/** Redis's answer to a write when used memory is above `maxmemory` and nothing may be evicted. */
const OOM_ERROR = /^OOM command not allowed\b|\bOOM command not allowed when used memory\b/;

/** Whether `e` is Redis refusing a write because it is full (`OOM command not allowed ...`). */
export function isRedisFull(e: unknown): boolean {
  return OOM_ERROR.test(e instanceof Error ? e.message : String(e));
}

/**
 * One line saying that the Redis at `where` is full and which settings to
 * change: Redis's own text ("OOM command not allowed when used memory >
 * 'maxmemory'") names neither the server nor the way out, and raising
 * `maxmemory-policy` to an evicting one is the wrong way out for BullMQ.
 */
export function redisFullMessage(where: string): string {
  return (
    `Redis at ${where} is full: it refuses writes (OOM, used memory > maxmemory); ` +
    "raise its maxmemory (CONFIG SET maxmemory <bytes>, or 0 for no limit) or free memory, " +
    "and keep maxmemory-policy noeviction (an evicting policy loses BullMQ's jobs)"
  );
}

/**
 * `e`, or, when it is Redis refusing a write for lack of memory, an error
 * with {@link redisFullMessage} for the Redis at `url` (credentials left out).
 */
export function explainRedisFull(e: unknown, url: string): unknown {
  return isRedisFull(e) ? new Error(redisFullMessage(redactUrl(url))) : e;
}
