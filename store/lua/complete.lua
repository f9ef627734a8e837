-- complete.lua: records a whole slice of results in one call (see
-- Store::complete): stale check, retry, final state + result, store_as into
-- the batch's own memory, dependents counted down or skipped transitively,
-- fail_fast, and the batch's end. A store_as into a shared namespace lives
-- in another slot: it is returned for the caller to write afterwards.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:` (also its memory scope prefix)
-- ARGV[1..5] channel, batch id, now, memory bell, change cap (see memory.lua)
-- ARGV[6]  number of completions; then 11 fields per completion:
--          index, attempt, ok (1 ok, 0 failed, 2 failed permanently), output, error, details_json, worker,
--          started_ms, duration_ms, has_store_as (1/0), store_as key
-- Returns: { recorded (-1 if no such batch), {retried...}, {stale...},
--            became_ready, finished batch state code or '',
--            {positions (0-based) of completions whose store_as goes to the
--             shared namespace}, the batch's memory scope code }
if redis.call('EXISTS', K_META) == 0 then return { -1, {}, {}, 0, '', {}, '' } end
local m = redis.call('HMGET', K_META, 'on_failure', 'memory')
local fail_fast = m[1] == 'fail_fast'
local memory = m[2] or 'b'
local shared = string.sub(memory, 1, 2) == 'm:'
local recorded, became_ready, retried, stale, shared_writes = 0, 0, {}, {}, {}
local count = tonumber(ARGV[6])
for position = 0, count - 1 do
  local base = 7 + position * 11
  local idx, attempt, ok = ARGV[base], tonumber(ARGV[base + 1]), ARGV[base + 2] == '1'
  local permanent = ARGV[base + 2] == '2'
  local output, err, details = ARGV[base + 3], ARGV[base + 4], ARGV[base + 5]
  local worker, started, duration = ARGV[base + 6], ARGV[base + 7], ARGV[base + 8]
  local has_store_as, store_as = ARGV[base + 9] == '1', ARGV[base + 10]
  if redis.call('HGET', K_STATE, idx) ~= 'U' or attempts_of(idx) ~= attempt then
    stale[#stale + 1] = tonumber(idx)
  else
    redis.call('HINCRBY', K_META, 'running', -1)
    local priority, _, max_attempts = op_info(idx)
    local fired = redis.call('HGET', K_META, 'fail_fast_fired') == '1'
    if not ok and not permanent and attempt < (max_attempts or 1) and not fired then
      push_ready(idx, priority or (PRIORITY_LEVELS - 1))
      event('retrying', idx, attempt, worker, err, nil)
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
local finished = finish_if_done()
ring()
return { recorded, retried, stale, became_ready, finished, shared_writes, memory }
