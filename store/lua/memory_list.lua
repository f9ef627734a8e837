-- memory_list.lua: live keys of a memory scope, sorted, from the scope's
-- `mkeys` index; index entries of keys that expired are dropped on the way.
-- KEYS[1]  scope prefix (see memory.lua)
-- ARGV[1..3] channel, batch id or '', now (unused)
-- ARGV[4]  ZRANGEBYLEX min  ARGV[5] max  ARGV[6] prefix  ARGV[7] limit
-- Returns: a flat list key, version, size, content type, expires_at_ms, ...
local index = K_MKEYS
local low, high, prefix, limit = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
local page = math.max(limit, 64)
local out, found = {}, 0
while found < limit do
  local names = redis.call('ZRANGEBYLEX', index, low, high, 'LIMIT', 0, page)
  for _, name in ipairs(names) do
    if string.sub(name, 1, #prefix) == prefix then
      local entry = redis.call('HMGET', k_mem(name), 'ver', 'size', 'ct', 'exp')
      if entry[1] then
        out[#out + 1] = name
        out[#out + 1] = entry[1]
        out[#out + 1] = entry[2] or '0'
        out[#out + 1] = entry[3] or ''
        out[#out + 1] = entry[4] or '0'
        found = found + 1
        if found >= limit then break end
      else
        redis.call('ZREM', index, name)
      end
    end
  end
  if #names < page then break end
  low = '(' .. names[#names]
end
return out
