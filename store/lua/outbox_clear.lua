-- outbox_clear.lua: drops the outbox entry of a shared `store_as` once its
-- namespace write is done (see complete.lua), only if it is still the
-- entry of that attempt: a later attempt's entry (a sequential pass ran the
-- op again) stays for its own write.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- ARGV[4]  op index  ARGV[5] attempt
-- Returns: 1 if it dropped the entry, else 0.
local raw = redis.call('HGET', K_OUTBOX, ARGV[4])
if not raw then return 0 end
local entry = cjson.decode(raw)
if tostring(entry.a) ~= ARGV[5] then return 0 end
redis.call('HDEL', K_OUTBOX, ARGV[4])
return 1
