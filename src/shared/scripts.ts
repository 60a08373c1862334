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
 * A worker in a lane claims the next shard of a version. KEYS: claims hash
 * of the version, version. ARGV: version, ttl seconds, worker id. Returns the
 * claim's index (0 for the first claim of the version: the first non-empty
 * shard of the step), -1 when the version is neither current nor the next
 * one (a shard claimed then would only be dropped as stale), or -2 when no
 * version is current (Redis restarted empty and the coordinator has not
 * published again yet: try again). An index at or past the step's shard
 * count means every shard is taken.
 *
 * The next version may be claimed before it exists: a worker that has done
 * its part of a step reserves a shard of the next one, so that it can start
 * computing the moment the weights are announced, with no round trip first.
 *
 * The hash holds `n` (claims so far) and, per claim index, the worker that
 * took it: who holds which shard, as BullMQ's processedBy tells for a job.
 */
export const CLAIM_SHARD = `
local cur = tonumber(redis.call('GET', KEYS[2]))
local v = tonumber(ARGV[1])
if cur == nil then
  return -2
end
if v ~= cur and v ~= cur + 1 then
  return -1
end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('HSET', KEYS[1], tostring(n - 1), ARGV[3])
if n == 1 then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return n - 1
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
