-- complete.lua: records a whole slice of results in one call (see
-- Store::complete): stale check, retry, final state + result, store_as into
-- the batch's own memory, dependents counted down or skipped transitively,
-- fail_fast, and the batch's end. A store_as into a shared namespace lives
-- in another slot: it is returned for the caller to write afterwards.
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
local m = redis.call('HMGET', K_META, 'on_failure', 'memory')
local fail_fast = m[1] == 'fail_fast'
local memory = m[2] or 'b'
local shared = string.sub(memory, 1, 2) == 'm:'
local recorded, became_ready, retried, stale, shared_writes = 0, 0, {}, {}, {}
local count = tonumber(ARGV[7])
for position = 0, count - 1 do
  local base = 8 + position * 12
  local idx, attempt, ok = ARGV[base], tonumber(ARGV[base + 1]), ARGV[base + 2] == 'ok'
  local kind, retry_after = ARGV[base + 2], ARGV[base + 11]
  local output, err, details = ARGV[base + 3], ARGV[base + 4], ARGV[base + 5]
  local worker, started, duration = ARGV[base + 6], ARGV[base + 7], ARGV[base + 8]
  local has_store_as, store_as = ARGV[base + 9] == '1', ARGV[base + 10]
  if redis.call('HGET', K_STATE, idx) ~= 'U' or attempts_of(idx) ~= attempt then
    stale[#stale + 1] = tonumber(idx)
  else
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
        e = err, j = details }))
      event(ok and 'succeeded' or 'failed', idx, attempt, worker, err, nil)
      recorded = recorded + 1
      if ok and has_store_as then
        if shared then
          shared_writes[#shared_writes + 1] = position
        else
          local version = mem_store(store_as, 'text/plain', '', '0', output, nil, nil, #output)
          local _, ready = mem_written(store_as, version, output, 'text/plain')
          became_ready = became_ready + ready
        end
      end
      became_ready = became_ready + propagate(idx, code)
      if not ok and fail_fast and not fired then
        redis.call('HSET', K_META, 'fail_fast_fired', '1')
        cancel_where({ W = true, R = true }, 'cancelled: fail_fast after op `' .. idx .. '` failed')
      end
    end
  end
end
local finished, pass_ready = finish_if_done()
ring()
return { recorded, retried, stale, became_ready + pass_ready, finished, shared_writes, memory,
  next_retry_at() }
