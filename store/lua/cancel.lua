-- cancel.lua: cancels every op not yet ended (running ones included) and
-- finishes the batch `cancelled`. Idempotent: a finished batch is left alone.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- ARGV[4]  reason
-- Returns: { cancelled count (-1 if no such batch), {idx, attempt, ... of the
--            ops that were running}, batch state code if this call finished
--            it, else '' }
local state = redis.call('HGET', K_META, 'state')
if not state then return { -1, {}, '' } end
if state ~= 'running' then return { 0, {}, '' } end
local reason = 'cancelled: ' .. ARGV[4]
redis.call('HSET', K_META, 'cancel_requested', '1', 'error', reason)
local cancelled = cancel_where({ W = true, R = true, U = true }, reason)
local running = {}
for position = 1, #cancelled, 3 do
  if cancelled[position + 2] == 1 then
    running[#running + 1] = cancelled[position]
    running[#running + 1] = cancelled[position + 1]
  end
end
local finished = finish_if_done()
ring()
return { #cancelled / 3, running, finished }
