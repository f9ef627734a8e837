-- expire_leases.lua: every running op whose lease ran out (deadline <= now)
-- ends its attempt as a `lost` failure: another attempt per its retry
-- policy (`retrying`), else failed "lost: …" with dependents skipped,
-- fail_fast applied and the batch finished if that was the last op.
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
if redis.call('HGET', K_META, 'state') ~= 'running' then
  redis.call('DEL', K_LEASES)
  return { 0, {}, {}, 0, '', '' }
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
    local err = string.format('lost: the worker\'s lease ran out at %d', tonumber(deadline or NOW))
    local delay = retry_delay(idx, 'lost', 0)
    if delay then
      local ready_at = requeue(idx, delay)
      event('retrying', idx, attempt, '', retry_message(err, delay, ready_at), nil)
      retried[#retried + 1] = idx
    else
      end_op(idx, 'F', cjson.encode({ e = err }))
      event('failed', idx, attempt, '', err, nil)
      failed = failed + 1
      became_ready = became_ready + propagate(idx, 'F')
      apply_fail_fast(idx)
    end
  end
end
local finished, pass_ready = finish_if_done()
ring()
return { failed, retried, {}, became_ready + pass_ready, finished, next_retry_at() }
