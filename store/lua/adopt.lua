-- adopt.lua: a reconnected worker says it still runs these attempts. Each
-- one whose op runs that attempt and whose recorded holder is this worker's
-- identity gets its lease moved; the others are refused: stale, held by
-- another identity, or with no holder recorded yet (adoption is never
-- granted on a worker's word alone).
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- ARGV[4]  new lease deadline, unix ms
-- ARGV[5]  the adopting identity (`<token id>/<worker id>`)
-- ARGV[6], ARGV[7], ...  op index, attempt (pairs)
-- Returns: -1 if the batch does not exist, else the refused attempts as a
--          flat {idx, attempt, ...} in the order given.
if redis.call('EXISTS', K_META) == 0 then return -1 end
local refused = {}
for position = 6, #ARGV, 2 do
  local idx, attempt = ARGV[position], tonumber(ARGV[position + 1])
  if redis.call('HGET', K_STATE, idx) == 'U' and attempts_of(idx) == attempt
      and redis.call('HGET', K_HOLDERS, idx) == attempt .. '|' .. ARGV[5] then
    redis.call('ZADD', K_LEASES, ARGV[4], idx)
  else
    refused[#refused + 1] = tonumber(idx)
    refused[#refused + 1] = attempt
  end
end
return refused
