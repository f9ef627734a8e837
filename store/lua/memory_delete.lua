-- memory_delete.lua: deletes a memory key (if at the expected version),
-- with its chunks and index entry; logs a delete change, rings the bell.
-- KEYS[1]  scope prefix (see memory.lua)
-- ARGV[1..5] channel, batch id or '', now, memory bell, change cap
-- ARGV[6]  key  ARGV[7] if_version ('' none)
-- Returns: { -1, actual version } on a mismatch, { 0 } if there was no such
-- key, { 1 } when deleted.
local key = ARGV[6]
local entry = k_mem(key)
local current = redis.call('HMGET', entry, 'ver', 'gen', 'n', 'ct')
local version = tonumber(current[1] or '0')
if ARGV[7] ~= '' and tonumber(ARGV[7]) ~= version then return { -1, version } end
if version == 0 then return { 0 } end
redis.call('DEL', entry)
drop_chunks(current[2], current[3])
redis.call('ZREM', K_MKEYS, key)
mem_change(key, 'd', version, nil, current[4] or '')
redis.call('PUBLISH', CHANNEL, MEM_BELL)
return { 1 }
