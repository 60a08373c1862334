/**
 * Lua scripts, run atomically by Redis. Keys come from keys.ts.
 */

/**
 * A worker's result submission: first valid writer wins, stale versions are
 * dropped. KEYS: result, version, notices, counters. ARGV: version, shard,
 * payload, ttl seconds. Returns "ok", "duplicate" or "stale".
 *
 * The winning write is stored under the result key (which keeps later
 * copies out) AND pushed with its notice, as `<version>:<shard>:frame:`
 * followed by the payload (see messages.ts): the coordinator's BLPOP then
 * hands it the result itself, with no second round trip to read the key.
 * Only the first writer's bytes are ever pushed, and only for the current
 * version. The list expires like the results do, should no coordinator be
 * left to drain it.
 */
export const SUBMIT_RESULT = `
local cur = redis.call('GET', KEYS[2])
if cur ~= ARGV[1] then
  redis.call('HINCRBY', KEYS[4], 'stale', 1)
  return 'stale'
end
if redis.call('SET', KEYS[1], ARGV[3], 'NX', 'EX', tonumber(ARGV[4])) then
  redis.call('RPUSH', KEYS[3], ARGV[1] .. ':' .. ARGV[2] .. ':frame:' .. ARGV[3])
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[4]))
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
