-- drop_batch.lua: deletes a finished batch whose retention ran out — its
-- records and its own memory scope — with UNLINK, so Redis frees a
-- million-op batch off its main thread. A batch still running is left alone.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- Returns: 1 if deleted, 0 if it is running, -1 if it does not exist.
local m = redis.call('HMGET', K_META, 'state', 'memory')
if not m[1] then return -1 end
if m[1] == 'running' or m[1] == 'creating' then return 0 end
local doomed = {K_META, P .. 'spec', K_STATE, K_ATTEMPTS, K_RESULT, K_EVENTS, K_SPEC_ADDED,
  K_OWNER, K_LEASES, K_DELAYED, K_INFO, K_PENDING, K_ARRIVED, K_ANY_DONE, K_DEADLINES,
  K_WAIT_INFO, K_HANDED_BACK}
for priority = 0, PRIORITY_LEVELS - 1 do doomed[#doomed + 1] = k_ready(priority) end
if m[2] == 'b' then
  local mkeys = P .. 'mkeys'
  for _, key in ipairs(redis.call('ZRANGE', mkeys, 0, -1)) do
    local mem = P .. 'mem:' .. key
    local chunked = redis.call('HMGET', mem, 'gen', 'n')
    doomed[#doomed + 1] = mem
    doomed[#doomed + 1] = k_waiters(key)
    if chunked[1] and chunked[1] ~= '' then
      for number = 0, tonumber(chunked[2] or '0') - 1 do
        doomed[#doomed + 1] = P .. 'chunk:' .. chunked[1] .. ':' .. number
      end
    end
  end
  doomed[#doomed + 1] = mkeys
  doomed[#doomed + 1] = P .. 'changes'
  doomed[#doomed + 1] = P .. 'revision'
end
for first = 1, #doomed, MAX_UNPACK do
  redis.call('UNLINK', unpack(doomed, first, math.min(first + MAX_UNPACK - 1, #doomed)))
end
return 1
