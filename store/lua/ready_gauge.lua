-- ready_gauge.lua: sets the length of the ready gauge, the global list
-- `volley:queue:ready` that KEDA's `redis` scaler reads with LLEN: trims it
-- or appends 1-byte items until it holds exactly the target. Not prefixed
-- with common.lua: it touches no batch, only this one global key (its own
-- slot).
-- KEYS[1]  the gauge list `volley:queue:ready`
-- ARGV[1]  the target length (the caller caps it)
-- Returns: the list's length after.
local key = KEYS[1]
local target = tonumber(ARGV[1])
local length = redis.call('LLEN', key)
if length > target then
  if target == 0 then
    redis.call('DEL', key)
  else
    redis.call('LTRIM', key, 0, target - 1)
  end
elseif length < target then
  -- RPUSH in chunks: Lua's unpack has a bounded stack.
  local chunk = {}
  for position = 1, math.min(target - length, 1000) do chunk[position] = '1' end
  local missing = target - length
  while missing > 0 do
    local count = math.min(missing, #chunk)
    redis.call('RPUSH', key, unpack(chunk, 1, count))
    missing = missing - count
  end
end
return redis.call('LLEN', key)
