-- drop_batch.lua: deletes a finished batch whose retention ran out — its
-- records and its own memory scope — with UNLINK, so Redis frees a
-- million-op batch off its main thread. A batch still running is left alone.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- Returns: 1 if deleted, 0 if it is running, -1 if it does not exist.
local state = redis.call('HGET', K_META, 'state')
if not state then return -1 end
if state == 'running' or state == 'creating' then return 0 end
local doomed = batch_record_keys()
for first = 1, #doomed, MAX_UNPACK do
  redis.call('UNLINK', unpack(doomed, first, math.min(first + MAX_UNPACK - 1, #doomed)))
end
return 1
