-- renew_leases.lua: moves the lease deadline of each running attempt given
-- and records who holds it; an attempt that is stale (its op not running,
-- running another attempt, or unknown) gets no lease and is reported back.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- ARGV[4]  new lease deadline, unix ms
-- ARGV[5], ARGV[6], ARGV[7], ...  op index, attempt, holder (triples); an
--          empty holder keeps the recorded one. `holders` keeps
--          `<attempt>|<holder>` per index, so a holder of an earlier attempt
--          never counts for a later one.
-- Returns: -1 if the batch does not exist, else the stale attempts as a
--          flat {idx, attempt, ...} in the order given.
if redis.call('EXISTS', K_META) == 0 then return -1 end
local stale = {}
for position = 5, #ARGV, 3 do
  local idx, attempt, holder = ARGV[position], tonumber(ARGV[position + 1]), ARGV[position + 2]
  if redis.call('HGET', K_STATE, idx) == 'U' and attempts_of(idx) == attempt then
    redis.call('ZADD', K_LEASES, ARGV[4], idx)
    if holder ~= '' then
      local held = attempt .. '|' .. holder
      if redis.call('HGET', K_HOLDERS, idx) ~= held then
        redis.call('HSET', K_HOLDERS, idx, held)
      end
    end
  else
    stale[#stale + 1] = tonumber(idx)
    stale[#stale + 1] = attempt
  end
end
return stale
