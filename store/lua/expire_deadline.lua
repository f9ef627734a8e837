-- expire_deadline.lua: once a running batch's deadline passed, cancels every
-- op not yet ended (running ones included: their late results are stale)
-- and finishes the batch `failed` ("deadline exceeded"). Otherwise a no-op:
-- one HMGET.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- ARGV[4]  the caller's fence `<coordinator>|<token>`: unless it is the
--          batch's live hold, nothing changes (see refuse_fence)
-- Returns: { cancelled (-1 if no such batch), {}, {}, 0, finished batch
--            state code or '', '' }, or the error reply `NOTOWNER <holder>`
local refused = refuse_fence(ARGV[4], { -1, {}, {}, 0, '', '' })
if refused then return refused end
local m = redis.call('HMGET', K_META, 'state', 'deadline_ms')
if not m[1] then return { -1, {}, {}, 0, '', '' } end
local deadline = tonumber(m[2] or '0') or 0
if m[1] ~= 'running' or deadline <= 0 or tonumber(NOW) < deadline then
  return { 0, {}, {}, 0, '', '' }
end
redis.call('HSET', K_META, 'deadline_fired', '1', 'error', 'deadline exceeded')
local cancelled = cancel_where({ W = true, R = true, U = true },
  'cancelled: the batch\'s deadline passed')
local finished = finish_if_done()
ring()
return { #cancelled / 3, {}, {}, 0, finished, '' }
