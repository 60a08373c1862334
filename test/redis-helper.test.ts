import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  checkRedisConfig,
  connectRedis,
  redactUrl,
  redisOptionsFromUrl,
  waitForRedis,
} from "../src/shared/redis.js";
import { freePort, startTestRedis, type TestRedis } from "./helpers/redis.js";

/** Clients opened by a test, closed after it whatever happened. */
const clients: Redis[] = [];
function client(url: string, role: "worker" | "producer" = "producer"): Redis {
  const c = connectRedis(url, { role, name: "gf-test" });
  clients.push(c);
  return c;
}
afterEach(() => {
  for (const c of clients.splice(0)) c.disconnect();
});

/** The rejection message of `promise`, or a failure if it resolves. */
async function rejection(promise: Promise<unknown>): Promise<string> {
  return promise.then(
    () => {
      throw new Error("expected a rejection");
    },
    (err: Error) => err.message,
  );
}

describe("redisOptionsFromUrl", () => {
  it("reads host, port, user, password and db, decoding them", () => {
    const o = redisOptionsFromUrl("redis://al%40ice:p%3Ass@redis.example:6380/3", { role: "producer" });
    expect(o).toMatchObject({
      host: "redis.example",
      port: 6380,
      db: 3,
      username: "al@ice",
      password: "p:ss",
    });
    expect(o.tls).toBeUndefined();
  });

  it("defaults the port to 6379, the db to 0 and the host to 127.0.0.1; strips IPv6 brackets", () => {
    expect(redisOptionsFromUrl("redis://cache", { role: "producer" })).toMatchObject({ port: 6379, db: 0 });
    expect(redisOptionsFromUrl("redis://[::1]:7000", { role: "producer" }).host).toBe("::1");
  });

  it("gives workers maxRetriesPerRequest null and producers a fail-fast client", () => {
    const worker = redisOptionsFromUrl("redis://h", { role: "worker" });
    expect(worker.maxRetriesPerRequest).toBeNull();
    expect(worker.retryStrategy?.(1000)).toBeTypeOf("number"); // reconnects forever
    const producer = redisOptionsFromUrl("redis://h", { role: "producer" });
    expect(producer.maxRetriesPerRequest).toBeGreaterThanOrEqual(1);
    expect(producer.maxRetriesPerRequest).toBeLessThanOrEqual(3);
    expect(producer.enableOfflineQueue).toBe(false);
  });

  it("turns on TLS for rediss:// and reads the CA file", async () => {
    const dir = await mkdtemp(join(tmpdir(), "gf-ca-"));
    try {
      const caFile = join(dir, "ca.pem");
      await writeFile(caFile, "-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n");
      const o = redisOptionsFromUrl("rediss://u:p@redis.example", { role: "worker", caFile });
      expect(o.tls).toMatchObject({ servername: "redis.example" });
      expect(String((o.tls as { ca: Buffer }).ca)).toContain("BEGIN CERTIFICATE");
      expect(redisOptionsFromUrl("rediss://10.0.0.1", { role: "worker" }).tls).toEqual({});
      expect(() =>
        redisOptionsFromUrl("rediss://h", { role: "worker", caFile: join(dir, "nope.pem") }),
      ).toThrow(/cannot read Redis CA file ".*nope\.pem"/);
    } finally {
      await rm(dir, { recursive: true });
    }
  });

  it("rejects bad URLs by name, without showing the password", () => {
    expect(() => redisOptionsFromUrl("http://u:secret@h", { role: "producer" })).toThrow(
      /redis:\/\/ or rediss:\/\//,
    );
    expect(() => redisOptionsFromUrl("redis://u:secret@h/x", { role: "producer" })).toThrow(
      /database "x" must be a non-negative integer/,
    );
    expect(() => redisOptionsFromUrl("redis://h", { role: "producer", caFile: "/ca.pem" })).toThrow(
      /not a rediss:/,
    );
    let message = "";
    try {
      redisOptionsFromUrl("redis://u:secret@h/x", { role: "producer" });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).not.toContain("secret");
  });
});

describe("redactUrl", () => {
  it("hides the password and keeps the rest", () => {
    expect(redactUrl("redis://alice:s3cret@h:6380/2")).toBe("redis://alice:***@h:6380/2");
    expect(redactUrl("rediss://:s3cret@h")).toBe("rediss://:***@h");
    expect(redactUrl("redis://h:6379")).toBe("redis://h:6379");
    expect(redactUrl("not a url:s3cret@h")).not.toContain("s3cret");
    expect(redactUrl("redis://alice:s3cret@h/0?password=p4ss#frag")).toBe(
      "redis://alice:***@h/0?password=***#***",
    );
    expect(redactUrl("redis://alice:s3c ret@h")).toBe("redis://alice:***@h");
  });
});

describe("startTestRedis", () => {
  let a: TestRedis;
  let b: TestRedis;
  beforeAll(async () => {
    [a, b] = await Promise.all([startTestRedis(), startTestRedis()]);
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  it("gives a working Redis", async () => {
    const c = client(a.url);
    await waitForRedis(c, 5_000);
    await c.set("k", "v");
    expect(await c.get("k")).toBe("v");
    expect(await checkRedisConfig(c)).toBeUndefined(); // noeviction
  });

  it("gives each call its own server", async () => {
    if (a.kind === "REDIS_URL") return; // one shared server by definition
    expect(a.url).not.toBe(b.url);
    const ca = client(a.url);
    const cb = client(b.url);
    await Promise.all([waitForRedis(ca, 5_000), waitForRedis(cb, 5_000)]);
    await ca.set("only-in-a", "1");
    expect(await cb.get("only-in-a")).toBeNull();
  });

  it("restarts on the same port, empty; a worker client reconnects by itself", async () => {
    if (!b.restart) return;
    const port = b.port;
    const worker = client(b.url, "worker");
    await waitForRedis(worker, 5_000);
    await worker.set("before", "1");
    await b.restart();
    expect(b.port).toBe(port);
    // The worker's command waits for the reconnect rather than failing.
    expect(await worker.get("before")).toBeNull();
    expect(await worker.dbsize()).toBe(0);
  });
});

describe("fault behaviour of the two roles", () => {
  it("a producer fails fast while Redis is down; waitForRedis names the address", async () => {
    const redis = await startTestRedis();
    try {
      if (!redis.kill) return;
      const producer = client(redis.url);
      await waitForRedis(producer, 5_000);
      await redis.kill();
      const started = Date.now();
      const err = await rejection(producer.get("k"));
      expect(err).toMatch(/Connection is closed|enableOfflineQueue|Stream isn't writeable|max retries/i);
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      await redis.stop();
    }
    // The default timeout: starting the server (a container in CI) is part of
    // this test, and takes what a loaded machine gives it.
  });

  it("waitForRedis rejects with 'cannot reach Redis at ...' when nothing listens", async () => {
    const port = await freePort();
    const c = client(`redis://:hidden@127.0.0.1:${port}`);
    const message = await rejection(waitForRedis(c, 1_500));
    expect(message).toMatch(
      new RegExp(`^cannot reach Redis at redis://127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`),
    );
    expect(message).not.toContain("hidden");
  });
});

/** Why a credentials test cannot run: only with GRADFLEET_TEST_REDIS=REDIS_URL, never in CI. */
const SHARED_SKIP =
  "needs a Redis the helper starts with credentials; GRADFLEET_TEST_REDIS=REDIS_URL names a shared one";

describe("credentials", () => {
  let withPassword: TestRedis | undefined;
  let withUser: TestRedis | undefined;
  /** A server with credentials, or undefined where only a shared REDIS_URL server exists. */
  const startOrSkip = (opts: Parameters<typeof startTestRedis>[0]) =>
    startTestRedis(opts).catch((err: Error) => {
      if (/REDIS_URL is shared/.test(err.message)) return undefined;
      throw err;
    });
  beforeAll(async () => {
    [withPassword, withUser] = await Promise.all([
      startOrSkip({ password: "pa ss:word" }),
      startOrSkip({ aclUser: { name: "trainer", password: "t0ps3cret" } }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([withPassword?.stop(), withUser?.stop()]);
  });

  it("requirepass: the right password works, a wrong one fails fast with WRONGPASS, none with NOAUTH", async (ctx) => {
    if (!withPassword) return ctx.skip(SHARED_SKIP);
    const good = client(withPassword.url);
    await waitForRedis(good, 5_000);
    expect(await good.ping()).toBe("PONG");

    const port = withPassword.port;
    const started = Date.now();
    const wrong = client(`redis://:nope@127.0.0.1:${port}`);
    expect(await rejection(waitForRedis(wrong, 20_000))).toBe(
      `Redis rejected the credentials for user default (WRONGPASS) at redis://127.0.0.1:${port}`,
    );
    const none = client(`redis://127.0.0.1:${port}`, "worker");
    expect(await rejection(waitForRedis(none, 20_000))).toMatch(
      /requires a password and none was given \(NOAUTH\)/,
    );
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("ACL user: right credentials work; wrong ones name the user; the client stops retrying", async (ctx) => {
    if (!withUser) return ctx.skip(SHARED_SKIP);
    const good = client(withUser.url, "worker");
    await waitForRedis(good, 5_000);
    await good.set("k", "v");
    expect(await good.get("k")).toBe("v");

    const started = Date.now();
    const wrong = client(`redis://trainer:wrong@127.0.0.1:${withUser.port}`, "worker");
    expect(await rejection(waitForRedis(wrong, 20_000))).toMatch(
      /^Redis rejected the credentials for user trainer \(WRONGPASS\)/,
    );
    expect(Date.now() - started).toBeLessThan(5_000);
    // It gave up instead of retrying forever.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(wrong.status).toBe("end");
    // A client that already gave up is reported the same way.
    expect(await rejection(waitForRedis(wrong, 1_000))).toMatch(/WRONGPASS/);
  });

  it("checkRedisConfig warns for allkeys-lru and when CONFIG is not allowed", async (ctx) => {
    if (!withUser) return ctx.skip(SHARED_SKIP);
    const admin = client(withUser.url);
    await waitForRedis(admin, 5_000);
    await admin.config("SET", "maxmemory-policy", "allkeys-lru");
    try {
      const warning = await checkRedisConfig(admin);
      expect(warning).toMatch(/maxmemory-policy allkeys-lru/);
      expect(warning).toMatch(/noeviction/);
    } finally {
      await admin.config("SET", "maxmemory-policy", "noeviction");
    }

    await admin.call("ACL", "SETUSER", "limited", "on", ">pw", "~*", "&*", "+@all", "-config");
    const limited = client(`redis://limited:pw@127.0.0.1:${withUser.port}`);
    await waitForRedis(limited, 5_000);
    expect(await checkRedisConfig(limited)).toMatch(/could not check maxmemory-policy .*NOPERM/);
  });
});
