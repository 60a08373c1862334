/**
 * Lua scripts, run atomically by Redis. Keys come from keys.ts.
 */

/**
 * A worker's result submission: first valid writer wins, stale versions are
 * dropped. KEYS: result, version, notices, counters. ARGV: version, shard,
 * payload, ttl seconds. Returns "ok", "duplicate" or "stale".
 */
export const SUBMIT_RESULT = `
local cur = redis.call('GET', KEYS[2])
if cur ~= ARGV[1] then
  redis.call('HINCRBY', KEYS[4], 'stale', 1)
  return 'stale'
end
if redis.call('SET', KEYS[1], ARGV[3], 'NX', 'EX', tonumber(ARGV[4])) then
  redis.call('RPUSH', KEYS[3], ARGV[1] .. ':' .. ARGV[2] .. ':ok')
  return 'ok'
end
redis.call('HINCRBY', KEYS[4], 'duplicate', 1)
return 'duplicate'
`;

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
