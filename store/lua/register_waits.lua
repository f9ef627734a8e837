-- register_waits.lua: for a batch whose memory is its own (batch scope),
-- during create_batch / add_ops: for each (op, key, mode) counts the key as
-- arrived if it is already in the batch's memory, else registers the op as
-- a waiter of the key. Check and register happen in one script, so a
-- concurrent write of the key is seen by exactly one side. A key whose
-- declared writers have all ended already (ops added by add_ops waiting for
-- it) is settled at once, as the end of its last writer would have
-- (settle_hopeless in common.lua), and the batch may finish.
-- Called in chunks of bounded size, triples in index order.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- ARGV[4], ARGV[5], ARGV[6], ...  op index, memory key, 'all'|'any' (triples)
-- Returns: { how many ops became ready, finished batch state code or '' }.
local became_ready = 0
local seen = {}
for position = 4, #ARGV, 3 do
  local idx, key, mode = ARGV[position], ARGV[position + 1], ARGV[position + 2]
  if redis.call('EXISTS', k_mem(key)) == 1 then
    local _, ready = arrive(idx, key, mode)
    became_ready = became_ready + ready
  else
    redis.call('SADD', k_waiters(key), waiter_member(idx, key, mode))
    if not seen[key] and key_hopeless(key) then
      seen[key] = true
      HOPELESS[#HOPELESS + 1] = key
    end
  end
end
if #HOPELESS == 0 then return { became_ready, '' } end
local finished, settled = finish_if_done()
ring()
return { became_ready + settled, finished }
