/**
 * Lua scripts, run atomically by Redis, and their typed wrappers. Keys come
 * from keys.ts. Only the coordinator's lease needs scripts: direct steps
 * send no result through Redis.
 *
 * Each script is defined once per connection with ioredis' `defineCommand`,
 * which calls it by SHA (EVALSHA) and sends the text only when Redis does not
 * have it yet (after a restart, say).
 */
import type { Redis } from "ioredis";

/**
 * Renew the coordinator lease only if we still hold it. KEYS: lease.
 * ARGV: owner, ttl ms. Returns 1 when renewed, 0 when lost.
 */
const RENEW_LEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
`;

/** Release the lease only if we hold it. KEYS: lease. ARGV: owner. Returns the keys deleted (0 or 1). */
const RELEASE_LEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`;

/** The scripts of the coordinator lease, on one connection. */
export interface LeaseScripts {
  /** 1 when `owner` held `key` and its TTL is now `ttlMs`; 0 when the lease was not `owner`'s. */
  renewLease(key: string, owner: string, ttlMs: number): Promise<number>;
  /** 1 when `owner` held `key` and it is deleted; 0 otherwise. */
  releaseLease(key: string, owner: string): Promise<number>;
}

/** The commands defineCommand adds to a connection (ioredis types them loosely). */
interface WithLeaseCommands {
  gfRenewLease(key: string, owner: string, ttlMs: string): Promise<number>;
  gfReleaseLease(key: string, owner: string): Promise<number>;
}

/** Defines the lease scripts on `redis` (once per connection) and returns their typed wrappers. */
export function leaseScripts(redis: Redis): LeaseScripts {
  const r = redis as unknown as Redis & WithLeaseCommands;
  if (typeof r.gfRenewLease !== "function") {
    redis.defineCommand("gfRenewLease", { numberOfKeys: 1, lua: RENEW_LEASE });
    redis.defineCommand("gfReleaseLease", { numberOfKeys: 1, lua: RELEASE_LEASE });
  }
  return {
    renewLease: (key, owner, ttlMs) => r.gfRenewLease(key, owner, String(ttlMs)),
    releaseLease: (key, owner) => r.gfReleaseLease(key, owner),
  };
}
