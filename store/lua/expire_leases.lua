-- expire_leases.lua: every running op whose lease ran out (deadline <= now)
-- lost its worker (it died, hung or was cut off). That is not the op's
-- fault: while the op has lost-worker retries left (meta
-- `lost_worker_retries`, counted per op in `lost_workers`) it runs again at
-- once and the attempt is handed back (it does not count against
-- `attempts`). Past them, it is an ordinary `lost` failure: another attempt
-- per its retry policy (`retrying`), else failed "lost: …" with dependents
-- skipped, fail_fast applied and the batch finished if that was the last
-- op. After fail_fast fired every failure is final. The error names the
-- worker when the store knows it (`running_on`, see renew_leases.lua) and
-- the time the lease ran out, as RFC 3339.
-- Nothing due is one ZRANGEBYSCORE (plus the next delayed retry).
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- ARGV[4]  random seed of this call (backoff jitter)
-- ARGV[5]  the caller's fence `<coordinator>|<token>`: unless it is the
--          batch's live hold, nothing changes (see refuse_fence)
-- Returns: { failed (-1 if no such batch), {retried...}, {}, became_ready,
--            finished batch state code or '', next delayed ready-at or '' },
--          or the error reply `NOTOWNER <holder>`
local refused = refuse_fence(ARGV[5], { -1, {}, {}, 0, '', '' })
if refused then return refused end
local due = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', NOW)
if #due == 0 then return { 0, {}, {}, 0, '', next_retry_at() } end
local m = redis.call('HMGET', K_META, 'state', 'lost_worker_retries')
if m[1] ~= 'running' then
  redis.call('DEL', K_LEASES)
  return { 0, {}, {}, 0, '', '' }
end
local lost_budget = tonumber(m[2] or '0') or 0
-- When a lost attempt started, for the record of a final loss (a rare
-- path): its `started` event among the batch's latest STARTED_LOOKBACK
-- events (almost always there); '' when not found (no start, no duration).
local STARTED_LOOKBACK = 10000
local function started_at(idx, attempt)
  local wanted = SEP .. 'started' .. SEP .. idx .. SEP .. attempt .. SEP
  local entries = redis.call('XREVRANGE', K_EVENTS, '+', '-', 'COUNT', STARTED_LOOKBACK)
  for _, entry in ipairs(entries) do
    local packed = entry[2][2] or ''
    local first = string.find(packed, SEP, 1, true)
    if first and string.sub(packed, first, first + #wanted - 1) == wanted then
      return string.sub(packed, 1, first - 1)
    end
  end
  return ''
end
math.randomseed(tonumber(ARGV[4]))
local indices = {}
for position, member in ipairs(due) do indices[position] = tonumber(member) end
table.sort(indices)
local failed, became_ready, retried = 0, 0, {}
for _, idx in ipairs(indices) do
  local deadline = redis.call('ZSCORE', K_LEASES, idx)
  if redis.call('HGET', K_STATE, idx) ~= 'U' then
    redis.call('ZREM', K_LEASES, idx)
  else
    leave_running(idx)
    local attempt = attempts_of(idx)
    -- `<attempt>|<worker>` when the coordinator that lost the worker said
    -- which; only for this attempt.
    local worker = ''
    local on = redis.call('HGET', K_RUNNING_ON, idx)
    if on then
      local on_attempt, on_worker = string.match(on, '^(%d+)|(.*)$')
      if tonumber(on_attempt) == attempt then worker = on_worker end
      redis.call('HDEL', K_RUNNING_ON, idx)
    end
    local who = 'its worker'
    if worker ~= '' then who = 'worker `' .. worker .. '`' end
    local err = string.format('lost: %s stopped renewing its lease (ran out at %s)', who,
      rfc3339_ms(deadline or NOW))
    local lost = tonumber(redis.call('HGET', K_LOST_WORKERS, idx) or '0')
    if lost < lost_budget and redis.call('HGET', K_META, 'fail_fast_fired') ~= '1' then
      redis.call('HINCRBY', K_LOST_WORKERS, idx, 1)
      redis.call('HINCRBY', K_HANDED_BACK, idx, 1)
      requeue(idx, 0)
      event('retrying', idx, attempt, worker, string.format(
        '%s; runs again (lost-worker retry %d of %d)', err, lost + 1, lost_budget), nil)
      retried[#retried + 1] = idx
    else
      local delay = retry_delay(idx, 'lost', 0)
      if delay then
        local ready_at = requeue(idx, delay)
        event('retrying', idx, attempt, worker, retry_message(err, delay, ready_at), nil)
        retried[#retried + 1] = idx
      else
        -- The record keeps the worker and how long the attempt ran, from
        -- its start to the end of its lease.
        local started = started_at(idx, attempt)
        local duration = ''
        if started ~= '' then
          duration = string.format('%d', math.max(0, tonumber(deadline) - tonumber(started)))
        end
        end_op(idx, 'F', cjson.encode({ e = err, w = worker, s = started, d = duration }), duration)
        event('failed', idx, attempt, worker, err, nil)
        failed = failed + 1
        became_ready = became_ready + propagate(idx, 'F')
        apply_fail_fast(idx)
      end
    end
  end
end
local finished, pass_ready = finish_if_done()
ring()
return { failed, retried, {}, became_ready + pass_ready, finished, next_retry_at() }
