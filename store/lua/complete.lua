-- complete.lua: records a whole slice of results in one call (see
-- Store::complete): stale check, retry, final state + result, store_as into
-- the batch's own memory, dependents counted down or skipped transitively,
-- fail_fast, and the batch's end. A store_as into a shared namespace lives
-- in another slot: it is recorded in the batch's `outbox` (op → JSON
-- {k = key, a = attempt, q = sequence}; the value is the op's output, kept
-- in its result) in this same step, and returned for the caller to write
-- afterwards; whoever writes it clears the entry (outbox_clear.lua), and a
-- caller that died before is repaired by a drain (Store::drain_outbox).
-- Ending ops counts their declared memory writes down and may skip the
-- waiters of a key nobody will write (settle_hopeless in common.lua).
--
-- The hot path — a success without a store_as into the batch's memory — is
-- batched: the states and attempts of the whole slice are read with one
-- HMGET each, and the successes' writes (states, results, leases, counters,
-- their dependents' countdowns) are applied together, so a success costs
-- about one command of its own (its event). Anything else (a failure, a
-- retry, a store_as that may wake waiters) first applies what is pending,
-- then runs op by op with fresh reads, exactly as before.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:` (also its memory scope prefix)
-- ARGV[1..5] channel, batch id, now, memory bell, change cap (see memory.lua)
-- ARGV[6]  random seed of this call (backoff jitter)
-- ARGV[7]  number of completions; then 12 fields per completion:
--          index, attempt, outcome ('ok', or the failure kind: 'error',
--          'timeout', 'lost', 'permanent'), output, error, details_json,
--          worker, started_ms, duration_ms, has_store_as (1/0), store_as
--          key, retry_after_ms
-- Returns: { recorded (-1 if no such batch), {retried...}, {stale...},
--            became_ready, finished batch state code or '',
--            {positions (0-based) of completions whose store_as goes to the
--             shared namespace}, the batch's memory scope code,
--            next delayed ready-at ms or '' }
if redis.call('EXISTS', K_META) == 0 then return { -1, {}, {}, 0, '', {}, '', '' } end
math.randomseed(tonumber(ARGV[6]))
local m = redis.call('HMGET', K_META, 'on_failure', 'memory', 'writers')
local fail_fast = m[1] == 'fail_fast'
local memory = m[2] or 'b'
writers_flag = m[3] == '1'
local shared = string.sub(memory, 1, 2) == 'm:'
local recorded, became_ready, retried, stale, shared_writes = 0, 0, {}, {}, {}
local count = tonumber(ARGV[7])

-- The slice's states and attempts, read once; kept current by the fast
-- path. `fresh` once a slow step ran: it may have changed any op, so read
-- each op again from then on.
local indices = {}
for position = 0, count - 1 do indices[#indices + 1] = ARGV[8 + position * 12] end
local known_state = hmget_many(K_STATE, indices)
local known_attempts = hmget_many(K_ATTEMPTS, indices)
local cached_state, cached_attempts = {}, {}
for position, idx in ipairs(indices) do
  if cached_state[idx] == nil then
    cached_state[idx] = known_state[position] or false
    cached_attempts[idx] = tonumber(known_attempts[position] or '0')
  end
end
local fresh = false

-- Successes not yet written.
local pending_states, pending_results, pending_ops = {}, {}, {}
-- Their durations, summed (kept exact: far below 2^53).
local pending_duration = 0
local function apply_successes()
  if #pending_ops == 0 then return end
  if pending_duration > 0 then
    redis.call('HINCRBY', K_META, 'duration_sum_ms', string.format('%d', pending_duration))
  end
  pending_duration = 0
  call_chunked('HSET', K_STATE, pending_states, 2)
  call_chunked('HSET', K_RESULT, pending_results, 2)
  call_chunked('ZREM', K_LEASES, pending_ops, 1)
  call_chunked('ZREM', K_DELAYED, pending_ops, 1)
  call_chunked('HDEL', K_PENDING, pending_ops, 1)
  redis.call('HINCRBY', K_META, 'running', -#pending_ops)
  redis.call('HINCRBY', K_META, 'succeeded', #pending_ops)
  writers_ended(pending_ops)
  became_ready = became_ready + count_down_many(pending_ops)
  pending_states, pending_results, pending_ops = {}, {}, {}
end

for position = 0, count - 1 do
  local base = 8 + position * 12
  local idx, attempt, ok = ARGV[base], tonumber(ARGV[base + 1]), ARGV[base + 2] == 'ok'
  local kind, retry_after = ARGV[base + 2], ARGV[base + 11]
  local output, err, details = ARGV[base + 3], ARGV[base + 4], ARGV[base + 5]
  local worker, started, duration = ARGV[base + 6], ARGV[base + 7], ARGV[base + 8]
  local has_store_as, store_as = ARGV[base + 9] == '1', ARGV[base + 10]
  local state, current
  if fresh then
    state, current = redis.call('HGET', K_STATE, idx), attempts_of(idx)
  else
    state, current = cached_state[idx], cached_attempts[idx]
  end
  if state ~= 'U' or current ~= attempt then
    stale[#stale + 1] = tonumber(idx)
  elseif ok and not (has_store_as and not shared) then
    -- The hot path: written with the rest of the slice's successes.
    cached_state[idx] = 'S'
    pending_ops[#pending_ops + 1] = idx
    pending_states[#pending_states + 1] = idx
    pending_states[#pending_states + 1] = 'S'
    pending_results[#pending_results + 1] = idx
    pending_results[#pending_results + 1] = cjson.encode({ w = worker, s = started,
      d = duration, o = output, e = err, j = details })
    if string.match(duration, '^%d+$') then
      pending_duration = pending_duration + tonumber(duration)
    end
    event('succeeded', idx, attempt, worker, err, nil)
    recorded = recorded + 1
    if has_store_as then
      shared_writes[#shared_writes + 1] = position
      local sequence = redis.call('HINCRBY', K_META, 'outbox_seq', 1)
      redis.call('HSET', K_OUTBOX, idx, cjson.encode({ k = store_as, a = attempt, q = sequence }))
    end
  else
    apply_successes()
    fresh = true
    leave_running(idx)
    local fired = redis.call('HGET', K_META, 'fail_fast_fired') == '1'
    local delay = nil
    if not ok then delay = retry_delay(idx, kind, retry_after) end
    if delay then
      local ready_at = requeue(idx, delay)
      event('retrying', idx, attempt, worker, retry_message(err, delay, ready_at), nil)
      retried[#retried + 1] = tonumber(idx)
    else
      local code = ok and 'S' or 'F'
      end_op(idx, code, cjson.encode({ w = worker, s = started, d = duration, o = output,
        e = err, j = details }), duration)
      event(ok and 'succeeded' or 'failed', idx, attempt, worker, err, nil)
      recorded = recorded + 1
      if ok and has_store_as then
        local version = mem_store(store_as, 'text/plain', '', '0', output, nil, nil, #output)
        local _, ready = mem_written(store_as, version, output, 'text/plain')
        became_ready = became_ready + ready
      end
      became_ready = became_ready + propagate(idx, code)
      if not ok and fail_fast and not fired then
        redis.call('HSET', K_META, 'fail_fast_fired', '1')
        cancel_where({ W = true, R = true }, 'cancelled: fail_fast after op `' .. idx .. '` failed',
          cause_fail_fast(idx))
      end
    end
  end
end
apply_successes()
local finished, pass_ready = finish_if_done()
ring()
return { recorded, retried, stale, became_ready + pass_ready, finished, shared_writes, memory,
  next_retry_at() }
