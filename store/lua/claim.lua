-- claim.lua: first moves delayed retries whose ready-at passed onto their
-- ready queues, then pops up to N ready ops, priority 0 first, FIFO within
-- a priority, bounded by the batch's max_parallel (when > 0) minus running,
-- and during its sequential pass (meta `sequential`) by 1 minus running;
-- marks them running with attempts + 1, leased until ARGV[5], and appends
-- one `started` each.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- ARGV[4]  max ops to claim
-- ARGV[5]  lease deadline, unix ms
-- Returns: -1 if the batch does not exist, else a flat list idx, attempt, ...
local m = redis.call('HMGET', K_META, 'state', 'max_parallel', 'running', 'sequential')
if not m[1] then return -1 end
if m[1] ~= 'running' then return {} end
promote_due()
local limit = tonumber(ARGV[4])
local max_parallel, running = tonumber(m[2] or '0'), tonumber(m[3] or '0')
if max_parallel > 0 and max_parallel - running < limit then limit = max_parallel - running end
if m[4] == '1' and 1 - running < limit then limit = 1 - running end
local out, claimed = {}, 0
for priority = 0, PRIORITY_LEVELS - 1 do
  while claimed < limit do
    local idx = redis.call('LPOP', k_ready(priority))
    if not idx then break end
    -- Entries of ops cancelled while queued are dropped here.
    if redis.call('HGET', K_STATE, idx) == 'R' then
      redis.call('HSET', K_STATE, idx, 'U')
      local attempt = redis.call('HINCRBY', K_ATTEMPTS, idx, 1)
      redis.call('ZADD', K_LEASES, ARGV[5], idx)
      event('started', idx, attempt, '', '', nil)
      out[#out + 1] = tonumber(idx)
      out[#out + 1] = attempt
      claimed = claimed + 1
    end
  end
end
if claimed > 0 then
  redis.call('HINCRBY', K_META, 'running', claimed)
  ring()
end
return out
