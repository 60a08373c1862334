/**
 * Lua scripts, run atomically by Redis. Keys come from keys.ts. Only the
 * coordinator's lease needs one: direct steps send no result through Redis.
 */

/**
 * Renew the coordinator lease only if we still hold it. KEYS: lease.
 * ARGV: owner, ttl ms. Returns 1 when renewed, 0 when lost.
 */
export const RENEW_LEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
`;

/** Release the lease only if we hold it. KEYS: lease. ARGV: owner. */
export const RELEASE_LEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`;
