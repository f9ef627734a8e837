-- op_waits.lua: what op ARGV[4] still waits for (for `volley why`). An op
-- not Waiting waits for nothing: pending 0, no missing keys.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua; now is unused)
-- ARGV[4]  op index
-- Returns: { status (0 ok, -1 no such batch or op), pending, {missing
--            keys...}, lease deadline or '', delayed ready-at or '' }
local idx = ARGV[4]
local state = redis.call('HGET', K_STATE, idx)
if not state or redis.call('EXISTS', K_META) == 0 then return { -1, 0, {}, '', '' } end
local pending, missing = 0, {}
if state == 'W' then
  pending = tonumber(redis.call('HGET', K_PENDING, idx) or '0')
  local raw = redis.call('HGET', K_WAIT_INFO, idx)
  if raw then
    local info = cjson.decode(raw)
    for _, key in ipairs(info.a or {}) do
      if redis.call('SISMEMBER', K_ARRIVED, idx .. '|' .. key) == 0 then
        missing[#missing + 1] = key
      end
    end
    if #(info.y or {}) > 0 and redis.call('SISMEMBER', K_ANY_DONE, idx) == 0 then
      for _, key in ipairs(info.y) do missing[#missing + 1] = key end
    end
  end
end
local lease = redis.call('ZSCORE', K_LEASES, idx)
local retry_at = redis.call('ZSCORE', K_DELAYED, idx)
return { 0, pending, missing,
  lease and string.format('%d', tonumber(lease)) or '',
  retry_at and string.format('%d', tonumber(retry_at)) or '' }
