-- memory_incr.lua: adds a delta to the integer (decimal text) in a memory
-- key, a missing key counting as 0, then logs and wakes like a put.
-- HINCRBY does the arithmetic, so it is exact over the whole i64 range and
-- refuses a value that is not an integer (or would overflow).
-- KEYS[1]  scope prefix (see memory.lua)
-- ARGV[1..5] channel, batch id or '', now, memory bell, change cap
-- ARGV[6]  key  ARGV[7] delta
-- Returns: { -3 } if the value is not an integer; else { new value (text),
--          version, unblocked, became_ready, {waiter members} }.
local key = ARGV[6]
local entry = k_mem(key)
local current = redis.call('HMGET', entry, 'ver', 'ct', 'gen')
if current[3] then return { -3 } end
local created = not current[1]
local content_type = current[2] or 'text/plain'
if created then
  redis.call('HSET', entry, 'ver', 0, 'ct', content_type, 'size', 0, 'exp', 0)
end
local reply = redis.pcall('HINCRBY', entry, 'v', ARGV[7])
if type(reply) == 'table' and reply.err then
  if created then redis.call('DEL', entry) end
  return { -3 }
end
local value = redis.call('HGET', entry, 'v')
local version = redis.call('HINCRBY', entry, 'ver', 1)
redis.call('HSET', entry, 'size', #value)
local unblocked, became_ready, foreign = mem_written(key, version, value, content_type)
return { value, version, unblocked, became_ready, foreign }
