-- renew_leases.lua: moves the lease deadline of each running attempt given;
-- an attempt that is stale (its op not running, running another attempt,
-- or unknown) gets no lease and is reported back.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- ARGV[4]  new lease deadline, unix ms
-- ARGV[5]  the worker these attempts run on, noted in `running_on` as
--          `<attempt>|<worker>` for expire_leases ('' notes nothing)
-- ARGV[6], ARGV[7], ...  op index, attempt (pairs)
-- Returns: -1 if the batch does not exist, else the stale attempts as a
--          flat {idx, attempt, ...} in the order given.
if redis.call('EXISTS', K_META) == 0 then return -1 end
local stale = {}
for position = 6, #ARGV, 2 do
  local idx, attempt = ARGV[position], tonumber(ARGV[position + 1])
  if redis.call('HGET', K_STATE, idx) == 'U' and attempts_of(idx) == attempt then
    redis.call('ZADD', K_LEASES, ARGV[4], idx)
    if ARGV[5] ~= '' then redis.call('HSET', K_RUNNING_ON, idx, attempt .. '|' .. ARGV[5]) end
  else
    stale[#stale + 1] = tonumber(idx)
    stale[#stale + 1] = attempt
  end
end
return stale
