-- memory_put.lua: makes a write of a memory key visible: compare-and-set
-- check, entry replaced (inline value, or flipped to a chunk set staged
-- before with separate bounded commands), TTL, change logged, waiters
-- popped (counted down here for a batch scope), memory bell rung.
-- KEYS[1]  scope prefix (see memory.lua)
-- ARGV[1..5] channel, batch id or '', now, memory bell, change cap
-- ARGV[6]  key  ARGV[7] content type  ARGV[8] ttl ms ('' none)
-- ARGV[9]  expires_at_ms ('0' never)  ARGV[10] if_version ('' none)
-- ARGV[11] 'i': ARGV[12] value | 'c': ARGV[12] gen, ARGV[13] chunks, ARGV[14] size
-- ARGV[15] guard ('' none): the name (under the scope's prefix) of a marker
--          of this exact write — a shared `store_as` of one op's attempt,
--          `applied:<batch>|<op>|<attempt>`. If it exists the write was
--          done already and nothing happens; else it is set with the write.
-- ARGV[16] the guard's lifetime, ms
-- Returns: { -1, actual version } on a version mismatch; { -2 } when a staged
-- chunk is gone; { -3, version written then } when the guard says the write
-- was done; else { version, unblocked, became_ready, {waiter members} }.
local key, content_type, ttl, expires_at = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local guard = ARGV[15] or ''
if guard ~= '' then
  local done = redis.call('GET', P .. guard)
  if done then return { -3, tonumber(done) } end
end
if ARGV[10] ~= '' then
  local actual = mem_version(key)
  if tonumber(ARGV[10]) ~= actual then return { -1, actual } end
end
local version, value
if ARGV[11] == 'i' then
  value = ARGV[12]
  version = mem_store(key, content_type, ttl, expires_at, value, nil, nil, #value)
else
  local gen, count = ARGV[12], tonumber(ARGV[13])
  for number = 0, count - 1 do
    if redis.call('EXISTS', k_chunk(gen, number)) == 0 then return { -2 } end
  end
  version = mem_store(key, content_type, ttl, expires_at, nil, gen, count, ARGV[14])
end
if guard ~= '' then redis.call('SET', P .. guard, version, 'PX', ARGV[16]) end
local unblocked, became_ready, foreign = mem_written(key, version, value, content_type)
return { version, unblocked, became_ready, foreign }
