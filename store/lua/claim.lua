-- claim.lua: first moves delayed retries whose ready-at passed onto their
-- ready queues, then pops up to N ready ops, priority 0 first, FIFO within
-- a priority, bounded by the batch's max_parallel (when > 0) minus running,
-- and during its sequential pass (meta `sequential`) by 1 minus running;
-- marks them running with attempts + 1, leased until ARGV[5], and appends
-- one `started` each.
-- Per claimed op this costs one command (its event's XADD); the rest — the
-- pops, state and attempt reads and writes, the leases — is one command per
-- call for all of them.
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
local claimed, seen = {}, {}
for priority = 0, PRIORITY_LEVELS - 1 do
  while #claimed < limit do
    local want = limit - #claimed
    local popped = redis.call('LPOP', k_ready(priority), want)
    if not popped then break end
    local states = hmget_many(K_STATE, popped)
    for position, idx in ipairs(popped) do
      -- Entries of ops cancelled while queued, and repeats, are dropped.
      if states[position] == 'R' and not seen[idx] then
        seen[idx] = true
        claimed[#claimed + 1] = idx
      end
    end
    if #popped < want then break end
  end
end
if #claimed == 0 then return {} end
local attempts = hmget_many(K_ATTEMPTS, claimed)
local out, state_args, attempt_args, lease_args = {}, {}, {}, {}
for position, idx in ipairs(claimed) do
  local attempt = tonumber(attempts[position] or '0') + 1
  state_args[#state_args + 1] = idx
  state_args[#state_args + 1] = 'U'
  attempt_args[#attempt_args + 1] = idx
  attempt_args[#attempt_args + 1] = attempt
  lease_args[#lease_args + 1] = ARGV[5]
  lease_args[#lease_args + 1] = idx
  event('started', idx, attempt, '', '', nil)
  out[#out + 1] = tonumber(idx)
  out[#out + 1] = attempt
end
call_chunked('HSET', K_STATE, state_args, 2)
call_chunked('HSET', K_ATTEMPTS, attempt_args, 2)
call_chunked('ZADD', K_LEASES, lease_args, 2)
redis.call('HINCRBY', K_META, 'running', #claimed)
ring_events()
return out
