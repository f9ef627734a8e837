-- reserve.lua: claims the id of an idempotent create_batch (see
-- Store::create_batch). The id is derived from the tenant and the
-- idempotency key, so the batch's meta is the key's mapping: claiming it here
-- and opening it in create.lua are the only steps, both on the batch's keys.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- ARGV[4] request digest  ARGV[5] tenant
-- ARGV[6] ms after which a batch still `creating` counts as abandoned
-- Returns: 'new' (claimed, state `creating`), 'existing' (same digest and
-- tenant: created already, or being created a moment ago: 'creating'), or
-- 'conflict' (another digest or tenant).
local m = redis.call('HMGET', K_META, 'state', 'digest', 'tenant', 'claimed_ms')
if m[1] then
  if m[2] ~= ARGV[4] or (m[3] or '') ~= ARGV[5] then return 'conflict' end
  if m[1] ~= 'creating' then return 'existing' end
  if tonumber(NOW) - tonumber(m[4] or '0') < tonumber(ARGV[6]) then return 'creating' end
  -- The call that claimed it died half way: what it wrote goes, and this
  -- call writes the batch anew (same id, same submission).
  local doomed = batch_record_keys()
  for first = 1, #doomed, MAX_UNPACK do
    redis.call('UNLINK', unpack(doomed, first, math.min(first + MAX_UNPACK - 1, #doomed)))
  end
end
redis.call('HSET', K_META, 'state', 'creating', 'digest', ARGV[4], 'tenant', ARGV[5],
  'claimed_ms', NOW)
return 'new'
