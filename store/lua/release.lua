-- release.lua: drops the batch's hold if it is still exactly the caller's
-- fence (a hold taken over or run out is left alone), so another
-- coordinator can take the batch at once.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua; now is not used)
-- ARGV[4]  the caller's fence `<coordinator>|<token>`
-- Returns: 1 if dropped, else 0.
if redis.call('GET', K_OWNER) ~= ARGV[4] then return 0 end
redis.call('DEL', K_OWNER)
return 1
