-- return_ops.lua: running attempts handed back unrun by their worker go to
-- the front of their ready queue (in the order given), lease dropped; the
-- attempt is counted in `handed_back`, so it does not count against
-- max_attempts, while the attempt number stays (a late result of it is
-- stale). Ops not running that attempt are ignored. One `retrying` each.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- ARGV[4], ARGV[5], ...  op index, attempt (pairs)
-- Returns: -1 if the batch does not exist, else how many were handed back.
if redis.call('EXISTS', K_META) == 0 then return -1 end
local returned = {}
for position = 4, #ARGV, 2 do
  local idx, attempt = ARGV[position], tonumber(ARGV[position + 1])
  if redis.call('HGET', K_STATE, idx) == 'U' and attempts_of(idx) == attempt then
    leave_running(idx)
    redis.call('HINCRBY', K_HANDED_BACK, idx, 1)
    redis.call('HSET', K_STATE, idx, 'R')
    event('retrying', idx, attempt, '', 'handed back by its worker', nil)
    returned[#returned + 1] = idx
  end
end
for position = #returned, 1, -1 do
  local idx = returned[position]
  local priority = op_info(idx)
  redis.call('LPUSH', k_ready(priority or (PRIORITY_LEVELS - 1)), idx)
end
if #returned > 0 then ring() end
return #returned
