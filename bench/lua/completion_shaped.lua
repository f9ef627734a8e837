-- completion_shaped.lua: W5's Redis ceiling. One call = the Redis commands
-- Volley's store/lua/complete.lua runs on its hot path to record a slice of
-- `count` successful completions, each op having one dependent whose
-- countdown reaches zero (so it is pushed ready) — the shape of W2's chains.
-- The ARGV layout is complete.lua's, so Redis parses requests of the same
-- size. Same key layout (every key under the batch prefix); no branching on
-- state: the command mix is the point, not the logic.
-- KEYS[1]  batch prefix, e.g. `volley:{b:<n>}:` (redis-benchmark: __rand_int__)
-- ARGV[1..5] channel, batch id, now, memory bell, change cap
-- ARGV[6]  random seed   ARGV[7] count; then 12 fields per completion:
--          index, attempt, outcome, output, error, details_json, worker,
--          started_ms, duration_ms, has_store_as, store_as, retry_after_ms
-- Commands per call: 20 + 2 × count (20 once per call; per completion its
-- event's XADD and its dependent's countdown HINCRBY).
local P = KEYS[1]
local K_META, K_STATE, K_ATTEMPTS = P .. 'meta', P .. 'state', P .. 'attempts'
local K_PENDING, K_INFO, K_RESULT = P .. 'pending', P .. 'info', P .. 'result'
local K_EVENTS, K_LEASES, K_DELAYED = P .. 'events', P .. 'leases', P .. 'delayed'
local K_READY = P .. 'ready:3'
local count = tonumber(ARGV[7])

-- The batch exists; its failure policy and memory scope.
redis.call('EXISTS', K_META)
redis.call('HMGET', K_META, 'on_failure', 'memory')
-- The slice's states and attempts, one HMGET each (the stale check).
local indices, dependents = {}, {}
for position = 0, count - 1 do
  local idx = ARGV[8 + position * 12]
  indices[#indices + 1] = idx
  dependents[#dependents + 1] = tostring(tonumber(idx) + count)
end
redis.call('HMGET', K_STATE, unpack(indices))
redis.call('HMGET', K_ATTEMPTS, unpack(indices))
-- Per completion: its result record and its `succeeded` event.
local states, results = {}, {}
for position = 0, count - 1 do
  local base = 8 + position * 12
  local idx = ARGV[base]
  states[#states + 1] = idx
  states[#states + 1] = 'S'
  results[#results + 1] = idx
  results[#results + 1] = cjson.encode({ w = ARGV[base + 6], s = ARGV[base + 7],
    d = ARGV[base + 8], o = ARGV[base + 3], e = ARGV[base + 4], j = ARGV[base + 5] })
  redis.call('XADD', K_EVENTS, '0-*', 't', ARGV[3], 'k', 'succeeded', 'i', idx,
    'a', ARGV[base + 1], 'w', ARGV[base + 6], 'm', ARGV[base + 4], 'b', '')
end
-- The successes applied together.
redis.call('HSET', K_STATE, unpack(states))
redis.call('HSET', K_RESULT, unpack(results))
redis.call('ZREM', K_LEASES, unpack(indices))
redis.call('ZREM', K_DELAYED, unpack(indices))
redis.call('HDEL', K_PENDING, unpack(indices))
redis.call('HINCRBY', K_META, 'running', -count)
redis.call('HINCRBY', K_META, 'succeeded', count)
-- Their dependents counted down (one HINCRBY each) and pushed ready.
redis.call('HMGET', K_INFO, unpack(indices))
redis.call('HMGET', K_STATE, unpack(dependents))
local ready_states = {}
for _, dependent in ipairs(dependents) do
  redis.call('HINCRBY', K_PENDING, dependent, -1)
  ready_states[#ready_states + 1] = dependent
  ready_states[#ready_states + 1] = 'R'
end
redis.call('HDEL', K_PENDING, unpack(dependents))
redis.call('HMGET', K_INFO, unpack(dependents))
redis.call('HSET', K_STATE, unpack(ready_states))
redis.call('RPUSH', K_READY, unpack(dependents))
-- Is the batch done; ring the doorbell; the next delayed retry.
redis.call('HMGET', K_META, 'state', 'total', 'succeeded', 'failed', 'skipped', 'cancelled',
  'cancel_requested', 'deadline_fired', 'fail_fast_fired', 'retry_failed', 'sequential')
redis.call('PUBLISH', ARGV[1], 'b:' .. ARGV[2])
redis.call('ZRANGE', K_DELAYED, 0, 0, 'WITHSCORES')
return count
