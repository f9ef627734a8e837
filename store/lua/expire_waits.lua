-- expire_waits.lua: fails the ops still waiting for memory keys past their
-- wait deadline, like a final failure: error naming the keys that never
-- arrived, dependents skipped transitively, fail_fast, the batch's end.
-- Nothing due is one ZRANGEBYSCORE.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- ARGV[4]  the caller's fence `<coordinator>|<token>`: unless it is the
--          batch's live hold, nothing changes (see refuse_fence)
-- Returns: { failed (-1 if no such batch), {}, {}, became_ready, finished
--            batch state code or '' } (complete.lua's shape), or the error
--          reply `NOTOWNER <holder>`
local refused = refuse_fence(ARGV[4], { -1, {}, {}, 0, '' })
if refused then return refused end
local due = redis.call('ZRANGEBYSCORE', K_DEADLINES, '-inf', NOW)
if #due == 0 then return { 0, {}, {}, 0, '' } end
if redis.call('HGET', K_META, 'state') ~= 'running' then
  redis.call('DEL', K_DEADLINES)
  return { 0, {}, {}, 0, '' }
end
local indices = {}
for position, member in ipairs(due) do indices[position] = tonumber(member) end
table.sort(indices)
local failed, became_ready = 0, 0
for _, idx in ipairs(indices) do
  redis.call('ZREM', K_DEADLINES, idx)
  -- waitinfo stays: a sequential pass reads it to mark the keys arrived.
  local raw = redis.call('HGET', K_WAIT_INFO, idx)
  if raw and redis.call('HGET', K_STATE, idx) == 'W' then
    local info = cjson.decode(raw)
    local missing = {}
    for _, key in ipairs(info.a or {}) do
      if redis.call('SISMEMBER', K_ARRIVED, idx .. '|' .. key) == 0 then
        missing[#missing + 1] = '`' .. key .. '`'
      end
    end
    if #(info.y or {}) > 0 and redis.call('SISMEMBER', K_ANY_DONE, idx) == 0 then
      for _, key in ipairs(info.y) do missing[#missing + 1] = '`' .. key .. '`' end
    end
    if #missing > 0 then
      local waited = tonumber(NOW) - tonumber(info.s)
      if waited < 0 then waited = 0 end
      local message = 'memory key ' .. table.concat(missing, ', ') .. ' never appeared (waited '
        .. string.format('%d', waited) .. ' ms)'
      end_op(idx, 'F', cjson.encode({ e = message }))
      event('failed', idx, attempts_of(idx), '', message, nil)
      failed = failed + 1
      became_ready = became_ready + propagate(idx, 'F')
      apply_fail_fast(idx)
    end
  end
end
local finished, pass_ready = finish_if_done()
ring()
return { failed, {}, {}, became_ready + pass_ready, finished }
