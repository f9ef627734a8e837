-- put_memory.lua: writes a key of the batch's memory and makes ready the
-- ops whose last missing input it was. Works before the batch exists (the
-- key then counts as present at creation).
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- ARGV[4]  memory key  ARGV[5] value
-- Returns: how many ops became ready.
redis.call('SET', k_mem(ARGV[4]), ARGV[5])
local became_ready = key_written(ARGV[4])
ring()
return became_ready
