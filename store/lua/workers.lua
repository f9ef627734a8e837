-- workers.lua: reads the cluster's worker registry (the global hash
-- `volley:workers`: coordinator id → JSON {until_ms, workers}) and deletes
-- the entries that ran out long ago. Not prefixed with common.lua: it
-- touches no batch, only this one global key (its own slot).
-- KEYS[1]  the registry hash `volley:workers`
-- ARGV[1]  now, unix ms
-- ARGV[2]  forget after, ms: an entry whose until_ms + this < now is deleted
-- Returns: flat {coordinator, json, ...} of the entries with until_ms >= now.
local now = tonumber(ARGV[1])
local forget_after = tonumber(ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
local live = {}
for position = 1, #all, 2 do
  local coordinator, json = all[position], all[position + 1]
  local ok, entry = pcall(cjson.decode, json)
  local until_ms = ok and type(entry) == 'table' and tonumber(entry.until_ms) or nil
  if until_ms == nil then
    -- Unreadable: left for the Rust side to report, never deleted here.
    live[#live + 1] = coordinator
    live[#live + 1] = json
  elseif until_ms >= now then
    live[#live + 1] = coordinator
    live[#live + 1] = json
  elseif until_ms + forget_after < now then
    redis.call('HDEL', KEYS[1], coordinator)
  end
end
return live
