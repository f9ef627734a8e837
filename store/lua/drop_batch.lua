-- drop_batch.lua: deletes a finished batch whose retention ran out — its
-- records and its own memory scope — with UNLINK, so Redis frees a
-- million-op batch off its main thread. A batch still running is left alone.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- Returns: 1 if deleted, 0 if it is running, -1 if it does not exist.
local state = redis.call('HGET', K_META, 'state')
if not state then return -1 end
if state == 'running' or state == 'creating' then return 0 end
local doomed = {K_META, P .. 'spec', K_STATE, K_ATTEMPTS, K_RESULT, K_EVENTS, K_SPEC_ADDED,
  K_OWNER, K_LEASES, K_DELAYED, K_INFO, K_PENDING, K_ARRIVED, K_ANY_DONE, K_DEADLINES,
  K_WAIT_INFO, K_HANDED_BACK, K_WRITES, K_WRITERS_LEFT, K_WRITER_OPS, K_OUTBOX}
for priority = 0, PRIORITY_LEVELS - 1 do doomed[#doomed + 1] = k_ready(priority) end
each_own_memory_key(function(key) doomed[#doomed + 1] = key end)
for first = 1, #doomed, MAX_UNPACK do
  redis.call('UNLINK', unpack(doomed, first, math.min(first + MAX_UNPACK - 1, #doomed)))
end
return 1
