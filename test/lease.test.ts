/**
 * The coordinator lease's scripts against a real Redis: only the owner
 * renews or releases, and the wrappers still work after Redis forgot the
 * scripts (SCRIPT FLUSH, as after a restart: ioredis falls back from
 * EVALSHA to EVAL).
 */
import { Redis } from "ioredis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { Lease, LeaseTakenError } from "../src/coordinator/lease.js";
import { leaseScripts } from "../src/shared/scripts.js";
import { startTestRedis, type TestRedis } from "./helpers/redis.js";

let server: TestRedis;
let redis: Redis;

beforeAll(async () => {
  server = await startTestRedis();
  redis = new Redis(server.url, { lazyConnect: true });
  await redis.connect();
}, 60_000);

afterAll(async () => {
  redis?.disconnect();
  await server?.stop();
});

it("renews and releases a lease for its owner only, also after SCRIPT FLUSH", async () => {
  const s = leaseScripts(redis);
  await redis.set("lease:a", "me", "PX", 5000);
  expect(await s.renewLease("lease:a", "someone-else", 60_000)).toBe(0);
  expect(await redis.pttl("lease:a")).toBeLessThanOrEqual(5000);
  expect(await s.renewLease("lease:a", "me", 60_000)).toBe(1);
  expect(await redis.pttl("lease:a")).toBeGreaterThan(5000);

  await redis.script("FLUSH");
  expect(await s.releaseLease("lease:a", "someone-else")).toBe(0);
  expect(await redis.get("lease:a")).toBe("me");
  // Defined once per connection: asking again gives working wrappers too.
  expect(await leaseScripts(redis).releaseLease("lease:a", "me")).toBe(1);
  expect(await redis.exists("lease:a")).toBe(0);
  expect(await s.renewLease("lease:a", "me", 60_000)).toBe(0);
});

it("refuses a second coordinator while the first holds the run, and lets it in once released", async () => {
  const first = await Lease.acquire(redis, "lease:b", "first", "run-b");
  await expect(Lease.acquire(redis, "lease:b", "second", "run-b")).rejects.toThrow(LeaseTakenError);
  await first.release();
  const second = await Lease.acquire(redis, "lease:b", "second", "run-b");
  expect(await redis.get("lease:b")).toBe("second");
  await second.release();
  expect(await redis.exists("lease:b")).toBe(0);
}, 30_000);
