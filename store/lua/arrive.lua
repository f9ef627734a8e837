-- arrive.lua: the batch half of a shared memory write (or of a shared key
-- found present at registration): marks each key arrived for its op and
-- counts the op down. Idempotent (see `arrive` in common.lua), so retrying
-- a step after a failure never counts twice.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- ARGV[4], ARGV[5], ARGV[6], ...  op index, memory key, 'all'|'any' (triples)
-- Returns: { countdowns decremented, ops that became ready }.
local unblocked, became_ready = 0, 0
for position = 4, #ARGV, 3 do
  local decremented, ready = arrive(ARGV[position], ARGV[position + 1], ARGV[position + 2])
  unblocked = unblocked + decremented
  became_ready = became_ready + ready
end
if unblocked > 0 then ring() end
return { unblocked, became_ready }
