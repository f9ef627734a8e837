-- note_blocked.lua: appends one `blocked` event for op ARGV[4] (attempt =
-- its attempts so far, message ARGV[5], no worker) and rings, but only
-- while the batch runs and the op has not ended. Changes no state or
-- counter: it is a note for whoever watches the events.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- ARGV[4]  op index
-- ARGV[5]  message: what may keep the op from ever running
-- Returns: -1 if there is no such batch (or it is still being created) or
--          no such op, 1 if the event was appended, 0 if not.
local state = redis.call('HGET', K_META, 'state')
if not state or state == 'creating' then return -1 end
local idx = ARGV[4]
local op_state = redis.call('HGET', K_STATE, idx)
if not op_state then return -1 end
if state ~= 'running' or FINAL[op_state] then return 0 end
event('blocked', idx, attempts_of(idx), '', ARGV[5], nil)
ring_events()
return 1
