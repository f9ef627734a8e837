-- register_waits.lua: during create_batch, for each (op, memory key) pair,
-- counts the key as satisfied if it is already in the batch's memory, else
-- registers the op as a waiter of the key. Check and register happen in one
-- script, so a concurrent put_memory of the key is seen by exactly one side.
-- Called in chunks of bounded size, pairs in index order.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- ARGV[4], ARGV[5], ...  op index, memory key (pairs)
-- Returns: how many ops became ready.
local became_ready = 0
for position = 4, #ARGV, 2 do
  local idx, key = ARGV[position], ARGV[position + 1]
  if redis.call('EXISTS', k_mem(key)) == 1 then
    became_ready = became_ready + count_down(idx)
  else
    redis.call('SADD', k_waiters(key), idx)
  end
end
return became_ready
