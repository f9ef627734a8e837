-- renew_leases.lua: moves the lease deadline of each running attempt given;
-- an op not running, or running another attempt, is ignored.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- ARGV[4]  new lease deadline, unix ms
-- ARGV[5], ARGV[6], ...  op index, attempt (pairs)
-- Returns: -1 if the batch does not exist, else how many leases moved.
if redis.call('EXISTS', K_META) == 0 then return -1 end
local renewed = 0
for position = 5, #ARGV, 2 do
  local idx, attempt = ARGV[position], tonumber(ARGV[position + 1])
  if redis.call('HGET', K_STATE, idx) == 'U' and attempts_of(idx) == attempt then
    redis.call('ZADD', K_LEASES, ARGV[4], idx)
    renewed = renewed + 1
  end
end
return renewed
