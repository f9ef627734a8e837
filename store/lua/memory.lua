-- memory.lua: helpers of the scripts that write a memory scope. The Rust
-- side prepends common.lua and this file to each such script.
--
-- Conventions on top of common.lua's:
--   KEYS[1]  the scope's prefix: the batch prefix `volley:{b:<batch>}:` for
--            a batch scope (its memory lives in the batch's slot, so a write
--            counts down the batch's waiters in the same script), or the
--            namespace prefix `volley:{m:<namespace>}:` for a shared one
--            (ARGV[2] is then '' and waiters are returned to the caller).
--   ARGV[4]  the memory doorbell payload (`mb:<batch>` / `m:<namespace>`)
--   ARGV[5]  the change log cap (approximate trimming, `MAXLEN ~`)
-- Entry `mem:<key>` is a hash: ver, ct, size, exp, and v (the value) or
-- gen + n (its chunks `chunk:<gen>:<i>`, i = 0 … n-1).

local MEM_BELL = ARGV[4]
local CHANGE_CAP = ARGV[5]
local CHANGE_VALUE_LIMIT = 65536

local function drop_chunks(gen, count)
  if not gen or gen == '' then return end
  for number = 0, tonumber(count or '0') - 1 do redis.call('DEL', k_chunk(gen, number)) end
end

-- The key's current version, 0 when it does not exist (or expired).
local function mem_version(key)
  return tonumber(redis.call('HGET', k_mem(key), 'ver') or '0')
end

local function apply_ttl(redis_key, ttl)
  if ttl == '' then
    redis.call('PERSIST', redis_key)
  else
    redis.call('PEXPIRE', redis_key, ttl)
  end
end

-- Appends a change with the next gapless revision as stream id `0-<rev>`.
-- kind: 'p' put, 'd' delete. value: nil when not carried.
local function mem_change(key, kind, version, value, content_type)
  local revision = redis.call('INCR', K_REVISION)
  local args = { 'XADD', K_CHANGES, 'MAXLEN', '~', CHANGE_CAP, '0-' .. revision,
    'k', key, 'o', kind, 'n', version, 'c', content_type, 't', NOW }
  if value then
    args[#args + 1] = 'v'
    args[#args + 1] = value
  end
  redis.call(unpack(args))
  return revision
end

-- Replaces the entry of `key`: inline `value`, or (value nil) the chunk set
-- `gen` of `count` chunks already staged. Old chunks are deleted after the
-- flip. Returns the new version.
local function mem_store(key, content_type, ttl, expires_at, value, gen, count, size)
  local entry = k_mem(key)
  local old = redis.call('HMGET', entry, 'ver', 'gen', 'n')
  local version = tonumber(old[1] or '0') + 1
  redis.call('DEL', entry)
  if value then
    redis.call('HSET', entry, 'ver', version, 'ct', content_type, 'size', size,
      'exp', expires_at, 'v', value)
  else
    redis.call('HSET', entry, 'ver', version, 'ct', content_type, 'size', size,
      'exp', expires_at, 'gen', gen, 'n', count)
    for number = 0, tonumber(count) - 1 do apply_ttl(k_chunk(gen, number), ttl) end
  end
  if ttl ~= '' then redis.call('PEXPIRE', entry, ttl) end
  if old[2] ~= gen then drop_chunks(old[2], old[3]) end
  return version
end

-- After a write of `key`: indexes it, logs the change, pops its waiters and
-- rings the memory bell. In a batch scope the waiters (all of this batch)
-- are counted down here; in a shared scope they are returned for the
-- caller to apply batch by batch. Returns unblocked (countdowns
-- decremented), became_ready, and the shared waiter members.
local function mem_written(key, version, value, content_type)
  redis.call('ZADD', K_MKEYS, 0, key)
  local carried = nil
  if value and #value <= CHANGE_VALUE_LIMIT then carried = value end
  mem_change(key, 'p', version, carried, content_type)
  local waiters_key = k_waiters(key)
  local members = redis.call('SMEMBERS', waiters_key)
  local unblocked, became_ready, foreign = 0, 0, {}
  if #members > 0 then
    redis.call('DEL', waiters_key)
    if BATCH ~= '' then
      local waits = {}
      for _, member in ipairs(members) do
        local idx, mode = parse_waiter(member, key)
        if idx then waits[#waits + 1] = { idx, mode } end
      end
      table.sort(waits, function(left, right) return left[1] < right[1] end)
      for _, wait in ipairs(waits) do
        local decremented, ready = arrive(wait[1], key, wait[2])
        unblocked = unblocked + decremented
        became_ready = became_ready + ready
      end
      if unblocked > 0 then ring() end
    else
      foreign = members
    end
  end
  redis.call('PUBLISH', CHANNEL, MEM_BELL)
  return unblocked, became_ready, foreign
end

-- ---- end of memory.lua; the verb's script follows ----
