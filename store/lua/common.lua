-- common.lua: helpers shared by every Volley script. The Rust side prepends
-- this file to each script (concat! of include_str!), so it is never run on
-- its own.
--
-- Conventions of every script:
--   KEYS[1]  the batch's key prefix `volley:{b:<batch>}:`. Every batch key is
--            KEYS[1] .. <suffix> (suffixes spelled as in src/keys.rs). This
--            is cluster-safe: all of them carry the batch's hash tag
--            `{b:<batch>}`, so they live in KEYS[1]'s slot.
--   ARGV[1]  doorbell channel (`volley:doorbell`)
--   ARGV[2]  batch id (the doorbell payload is `b:<batch id>`); '' for a
--            script on a shared memory namespace, whose KEYS[1] is then the
--            namespace prefix `volley:{m:<namespace>}:` (and batch helpers
--            are not used)
--   ARGV[3]  now, unix ms (written as given: no float arithmetic on times)
-- Scripts never touch global keys (`volley:active`, `volley:batches`): the
-- Rust side updates those with separate idempotent commands.

local P = KEYS[1]
local K_META = P .. 'meta'
local K_STATE = P .. 'state'
local K_ATTEMPTS = P .. 'attempts'
local K_PENDING = P .. 'pending'
local K_INFO = P .. 'info'
local K_RESULT = P .. 'result'
local K_EVENTS = P .. 'events'
local K_ARRIVED = P .. 'arrived'
local K_ANY_DONE = P .. 'any_done'
local K_DEADLINES = P .. 'deadlines'
local K_WAIT_INFO = P .. 'waitinfo'
local K_SPEC_ADDED = P .. 'spec_added'
local K_LEASES = P .. 'leases'
local K_DELAYED = P .. 'delayed'
local K_HANDED_BACK = P .. 'handed_back'
local K_OWNER = P .. 'owner'
-- Declared writers of the batch's own memory keys (see settle_hopeless) and
-- the outbox of shared `store_as` writes (see complete.lua).
local K_WRITES = P .. 'writes'
local K_WRITERS_LEFT = P .. 'writers_left'
local K_WRITER_OPS = P .. 'writer_ops'
local K_OUTBOX = P .. 'outbox'
-- idempotent add_ops: key -> the first call's record (see add_ops.lua)
local K_SPAWN_KEYS = P .. 'spawn_keys'
-- lost-worker retries each op had (see expire_leases.lua)
local K_LOST_WORKERS = P .. 'lost_workers'
-- the worker a coordinator saw an orphaned attempt on (see renew_leases.lua)
local K_RUNNING_ON = P .. 'running_on'
local CHANNEL = ARGV[1]
local BATCH = ARGV[2]
local NOW = ARGV[3]
local PRIORITY_LEVELS = 4

local function k_ready(priority) return P .. 'ready:' .. priority end
local function k_waiters(key) return P .. 'waiters:' .. key end
local function k_mem(key) return P .. 'mem:' .. key end
local function k_chunk(gen, number) return P .. 'chunk:' .. gen .. ':' .. number end
-- A memory scope's index of keys, change log and its counter.
local K_MKEYS = P .. 'mkeys'
local K_CHANGES = P .. 'changes'
local K_REVISION = P .. 'revision'

local function ring()
  redis.call('PUBLISH', CHANNEL, 'b:' .. BATCH)
end

-- Only the batch's events changed (nothing became claimable).
local function ring_events()
  redis.call('PUBLISH', CHANNEL, 'v:' .. BATCH)
end

-- The owner hold `<coordinator>|<token>` split into coordinator, token
-- (the coordinator id may itself contain '|': the token is after the last).
local function parse_owner(value)
  return string.match(value, '^(.*)|(%d+)$')
end

-- Checks a fenced verb's fence (`<coordinator>|<token>`) against the
-- batch's live hold (the `owner` key, gone once its PX ran out). Returns
-- nil when it is the hold; else what the script must return at once:
-- `missing` when the batch does not exist, or the error reply
-- `NOTOWNER <holder>` (holder: the coordinator holding the batch now, ''
-- when nobody does), which the Rust side maps to StoreError::NotOwner.
-- A live hold is checked first, so the fast path is one GET.
local function refuse_fence(fence, missing)
  local current = redis.call('GET', K_OWNER)
  if current == fence then return nil end
  if redis.call('EXISTS', K_META) == 0 then return missing end
  local holder = ''
  if current then holder = parse_owner(current) or '' end
  return redis.error_reply('NOTOWNER ' .. holder)
end

-- Separates an event's fields in its one stream field `e` (ASCII unit
-- separator; worker ids may not contain control characters, and the
-- message, which may, comes last).
local SEP = '\31'

-- Appends an event with the next gapless seq as stream id `0-<seq>`: the
-- stream numbers it (`0-*`: Redis 7 takes the next sequence after the last
-- id, starting at 1), so an event is one command. Its fields are packed in
-- one: `e` = now, kind, op index, attempt, worker, batch state, message.
-- A message that names ops (see `cause_*` below) has its cause beside it,
-- as JSON in field `c`.
local function event(kind, idx, attempt, worker, message, batch_state, cause)
  local packed = NOW .. SEP .. kind .. SEP .. (idx or '') .. SEP .. (attempt or 0) .. SEP ..
    (worker or '') .. SEP .. (batch_state or '') .. SEP .. (message or '')
  if cause then
    redis.call('XADD', K_EVENTS, '0-*', 'e', packed, 'c', cjson.encode(cause))
  else
    redis.call('XADD', K_EVENTS, '0-*', 'e', packed)
  end
end

-- Causes (`Cause` in src/model.rs): the ops a skip's or a fail_fast
-- cancel's message names, as data, kept beside the message (`c` in the
-- op's result JSON and in its event) so readers never parse the text.
-- Dependency `idx` ended with state `code`.
local function cause_dependency(idx, code)
  return { d = tonumber(idx), s = code }
end
-- The batch is fail_fast and op `idx` failed for good.
local function cause_fail_fast(idx)
  return { f = tonumber(idx) }
end

-- A unix ms time as RFC 3339 UTC with ms (`2026-12-02T03:04:05.123Z`), as
-- model.rs's rfc3339_ms spells it (civil-from-days, H. Hinnant).
local function rfc3339_ms(unix_ms)
  local ms = tonumber(unix_ms)
  local millis = ms % 1000
  local secs = (ms - millis) / 1000
  local in_day = secs % 86400
  local z = (secs - in_day) / 86400 + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400
  if month <= 2 then year = year + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', year, month, day,
    math.floor(in_day / 3600), math.floor(in_day % 3600 / 60), in_day % 60, millis)
end

-- Most arguments one command gets from a Lua table (unpack uses the C stack).
local MAX_UNPACK = 512

-- `command key args...` in slices of at most MAX_UNPACK arguments, never
-- splitting a `group`-sized tuple (field/value pairs: 2).
local function call_chunked(command, key, args, group)
  local step = MAX_UNPACK - (MAX_UNPACK % group)
  for first = 1, #args, step do
    local last = math.min(first + step - 1, #args)
    redis.call(command, key, unpack(args, first, last))
  end
end

-- HMGET of many fields, in slices; values in the order of `fields`.
local function hmget_many(key, fields)
  local values = {}
  for first = 1, #fields, MAX_UNPACK do
    local last = math.min(first + MAX_UNPACK - 1, #fields)
    local slice = redis.call('HMGET', key, unpack(fields, first, last))
    for position = 1, #slice do values[first + position - 1] = slice[position] end
  end
  return values
end

-- info = "priority|run_if_always|max_attempts|retry|d1,d2,..." where retry =
-- "<on_failure><on_timeout><on_lost_worker>,<initial_ms>,<max_ms>,<multiplier>,<jitter>"
-- (flags and jitter 0/1). Returns priority, run_if_always, max_attempts,
-- dependents, retry (the raw retry field; '' = the default policy).
local function parse_info(raw)
  if not raw then return nil end
  local priority, always, max_attempts, retry, dependents =
    string.match(raw, '^(%d+)|(%d)|(%d+)|([^|]*)|(.*)$')
  if not priority then
    -- Written before retry policies existed: no retry field.
    priority, always, max_attempts, dependents = string.match(raw, '^(%d+)|(%d)|(%d+)|(.*)$')
    retry = ''
  end
  return tonumber(priority), always == '1', tonumber(max_attempts), dependents, retry
end

local function op_info(idx)
  return parse_info(redis.call('HGET', K_INFO, idx))
end

local function attempts_of(idx)
  return tonumber(redis.call('HGET', K_ATTEMPTS, idx) or '0')
end

-- Attempts that count against max_attempts: started minus handed back.
local function used_attempts(idx)
  return attempts_of(idx) - tonumber(redis.call('HGET', K_HANDED_BACK, idx) or '0')
end

-- Failure kinds (complete.lua's encoding) → the policy flag that allows a retry.
local KIND_FLAG = { error = 1, timeout = 2, lost = 3 }
-- Longest backoff delay, so times stay exact integers in Lua's doubles.
local MAX_DELAY_MS = 1e15

-- The delay (ms, 0 = at once) before another attempt of `idx`, which just
-- failed with `kind` ('error', 'timeout', 'lost', 'permanent'); nil when
-- there is none: permanent, the policy refuses the kind, attempts used up,
-- or fail_fast fired. Backoff: initial * multiplier^(used - 1), at most
-- max (0: no cap), with jitter uniform in [delay/2, delay] (math.random,
-- seeded per call by the caller); at least `retry_after`.
local function retry_delay(idx, kind, retry_after)
  local flag = KIND_FLAG[kind]
  if not flag then return nil end
  -- After fail_fast, and in the sequential pass, every failure is final.
  local flags_of_batch = redis.call('HMGET', K_META, 'fail_fast_fired', 'sequential')
  if flags_of_batch[1] == '1' or flags_of_batch[2] == '1' then return nil end
  local _, _, max_attempts, _, retry = op_info(idx)
  local flags, initial, cap, multiplier, jitter =
    string.match(retry or '', '^([01][01][01]),(%d+),(%d+),([^,]+),([01])$')
  if flags and string.sub(flags, flag, flag) ~= '1' then return nil end
  local used = used_attempts(idx)
  if used >= (max_attempts or 1) then return nil end
  local delay = 0
  initial = tonumber(initial or '0') or 0
  if initial > 0 then
    multiplier = tonumber(multiplier) or 1
    cap = tonumber(cap) or 0
    local exponent = used - 1
    if exponent < 0 then exponent = 0 end
    delay = initial * multiplier ^ exponent
    if delay ~= delay then delay = initial end
    if cap > 0 and delay > cap then delay = cap end
    if delay > MAX_DELAY_MS then delay = MAX_DELAY_MS end
    delay = math.floor(delay)
    if jitter == '1' then
      local half = math.floor(delay / 2)
      local jittered = half + math.floor(math.random() * (delay - half + 1))
      if jittered > delay then jittered = delay end
      delay = jittered
    end
  end
  retry_after = tonumber(retry_after or '0') or 0
  if retry_after > MAX_DELAY_MS then retry_after = MAX_DELAY_MS end
  if retry_after > delay then delay = retry_after end
  return delay
end

local function push_ready(idx, priority)
  redis.call('HSET', K_STATE, idx, 'R')
  redis.call('RPUSH', k_ready(priority), idx)
end

-- The op leaves Running (not ended): running counter -1, lease dropped.
local function leave_running(idx)
  redis.call('HINCRBY', K_META, 'running', -1)
  redis.call('ZREM', K_LEASES, idx)
end

-- Another attempt of `idx` after `delay` ms: onto its ready queue at once,
-- or (state Ready) into the delayed set scored by its ready-at. Returns the
-- ready-at, unix ms.
local function requeue(idx, delay)
  local priority = op_info(idx)
  if delay <= 0 then
    push_ready(idx, priority or (PRIORITY_LEVELS - 1))
    return tonumber(NOW)
  end
  local ready_at = tonumber(NOW) + delay
  redis.call('HSET', K_STATE, idx, 'R')
  redis.call('ZADD', K_DELAYED, string.format('%d', ready_at), idx)
  return ready_at
end

-- The message of a `retrying` event: the failure, then when.
local function retry_message(err, delay, ready_at)
  if delay <= 0 then return err end
  local when = string.format('next attempt at %s (in %d ms)', rfc3339_ms(ready_at), delay)
  if err == nil or err == '' then return when end
  return err .. '; ' .. when
end

-- The earliest ready-at still in the delayed set, as a string ('' none).
local function next_retry_at()
  local first = redis.call('ZRANGE', K_DELAYED, 0, 0, 'WITHSCORES')
  if #first < 2 then return '' end
  return string.format('%d', tonumber(first[2]))
end

-- Moves delayed retries whose ready-at passed onto their ready queues
-- (those no longer Ready — cancelled meanwhile — are just dropped).
-- In (ready-at, index) order, indices compared as numbers (as the memory
-- store does; Redis would break ties lexicographically).
local function promote_due()
  local flat = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', NOW, 'WITHSCORES')
  local due = {}
  for position = 1, #flat, 2 do
    due[#due + 1] = { tonumber(flat[position + 1]), tonumber(flat[position]) }
  end
  table.sort(due, function(left, right)
    if left[1] ~= right[1] then return left[1] < right[1] end
    return left[2] < right[2]
  end)
  for _, entry in ipairs(due) do
    local idx = entry[2]
    redis.call('ZREM', K_DELAYED, idx)
    if redis.call('HGET', K_STATE, idx) == 'R' then
      local priority = op_info(idx)
      redis.call('RPUSH', k_ready(priority or (PRIORITY_LEVELS - 1)), idx)
    end
  end
end

-- One input of a Waiting op arrived: count down, ready at zero. Returns 1
-- when the op became ready.
local function count_down(idx)
  if redis.call('HGET', K_STATE, idx) ~= 'W' then return 0 end
  local left = redis.call('HINCRBY', K_PENDING, idx, -1)
  if left > 0 then return 0 end
  redis.call('HDEL', K_PENDING, idx)
  local priority = op_info(idx)
  push_ready(idx, priority or (PRIORITY_LEVELS - 1))
  return 1
end

-- Every op in `ended` succeeded (run_if does not matter then): count down
-- each of their dependents, in one pass over the lot — one HINCRBY per
-- distinct dependent, the reads and the ready pushes batched. Dependents
-- reaching zero are pushed in the order their last input ended, as one
-- count_down per edge would. Returns how many became ready.
local function count_down_many(ended)
  if #ended == 0 then return 0 end
  local infos = hmget_many(K_INFO, ended)
  local order, decrements, last = {}, {}, {}
  local edge = 0
  for position = 1, #ended do
    local _, _, _, dependents = parse_info(infos[position])
    for dependent in string.gmatch(dependents or '', '%d+') do
      edge = edge + 1
      if not decrements[dependent] then
        order[#order + 1] = dependent
        decrements[dependent] = 0
      end
      decrements[dependent] = decrements[dependent] + 1
      last[dependent] = edge
    end
  end
  if #order == 0 then return 0 end
  local states = hmget_many(K_STATE, order)
  local ready = {}
  for position, dependent in ipairs(order) do
    if states[position] == 'W' then
      local left = redis.call('HINCRBY', K_PENDING, dependent, -decrements[dependent])
      if left <= 0 then ready[#ready + 1] = dependent end
    end
  end
  if #ready == 0 then return 0 end
  table.sort(ready, function(left, right) return last[left] < last[right] end)
  call_chunked('HDEL', K_PENDING, ready, 1)
  local ready_infos = hmget_many(K_INFO, ready)
  local state_args, by_priority = {}, {}
  for position, dependent in ipairs(ready) do
    local priority = parse_info(ready_infos[position]) or (PRIORITY_LEVELS - 1)
    state_args[#state_args + 1] = dependent
    state_args[#state_args + 1] = 'R'
    by_priority[priority] = by_priority[priority] or {}
    local queue = by_priority[priority]
    queue[#queue + 1] = dependent
  end
  call_chunked('HSET', K_STATE, state_args, 2)
  for priority = 0, PRIORITY_LEVELS - 1 do
    if by_priority[priority] then call_chunked('RPUSH', k_ready(priority), by_priority[priority], 1) end
  end
  return #ready
end

-- Memory key `key` arrived for op `idx`, as one of its `wait_for` keys
-- (mode 'all') or of its `wait_for_any` group (mode 'any'). Idempotent: the
-- `arrived` / `any_done` sets remember what was counted, so a retried step
-- (or a second key of an any-group) never counts twice. Returns two
-- numbers: 1 if the op's countdown was decremented, 1 if it became ready.
local function arrive(idx, key, mode)
  if redis.call('HGET', K_STATE, idx) ~= 'W' then return 0, 0 end
  if mode == 'any' then
    if redis.call('SADD', K_ANY_DONE, idx) == 0 then return 0, 0 end
  else
    if redis.call('SADD', K_ARRIVED, idx .. '|' .. key) == 0 then return 0, 0 end
  end
  return 1, count_down(idx)
end

-- A waiter set member: `<batch>|<op>|<key>|<all|any>`.
local function waiter_member(idx, key, mode)
  return BATCH .. '|' .. idx .. '|' .. key .. '|' .. mode
end

-- Parses a member of this batch's waiter set of `key` into op index, mode.
local function parse_waiter(member, key)
  local head = BATCH .. '|'
  local rest = string.sub(member, #head + 1)
  local idx, mode = string.match(rest, '^(%d+)|.*|(%a+)$')
  return tonumber(idx), mode
end

local COUNTER = { S = 'succeeded', F = 'failed', K = 'skipped', C = 'cancelled' }
local ENDED_WORD = { F = 'failed', C = 'cancelled', K = 'skipped' }
local FINAL = { S = true, F = true, K = true, C = true }

-- ---- Declared writers (a key nobody will write) ----
-- Meta `writers` = 1 when some op of the batch declares writes of its own
-- memory; then `writes` (op → 'k1,k2'), `writer_ops` (key → 'i1,i2') and
-- `writers_left` (key → declared writers not yet ended) are kept. An op's
-- end counts its keys down (HINCRBY, no scan); a key reaching 0 goes on
-- HOPELESS, which settle_hopeless works off before the batch may finish.
local HOPELESS = {}
local writers_flag = nil

local function batch_has_writers()
  if writers_flag == nil then writers_flag = redis.call('HGET', K_META, 'writers') == '1' end
  return writers_flag
end

-- Ops `indices` just ended (any final state): count their declared keys down.
local function writers_ended(indices)
  if #indices == 0 or not batch_has_writers() then return end
  local lists = hmget_many(K_WRITES, indices)
  for position = 1, #indices do
    local list = lists[position]
    if list then
      for key in string.gmatch(list, '[^,]+') do
        local left = redis.call('HINCRBY', K_WRITERS_LEFT, key, -1)
        if left == 0 then
          HOPELESS[#HOPELESS + 1] = key
        elseif left < 0 then
          -- A writer ending again (a sequential pass): stays at 0, as the
          -- in-memory store's count saturates, so a writer added later counts.
          redis.call('HSET', K_WRITERS_LEFT, key, 0)
        end
      end
    end
  end
end

-- Adds declared writers (create_batch's pipeline writes them itself;
-- add_ops calls this): `raw` is JSON `[[idx, [keys...]], ...]` ('' none).
-- Ignored when the batch's memory is a shared namespace.
local function add_writers(raw)
  if not raw or raw == '' then return end
  local entries = cjson.decode(raw)
  if #entries == 0 or redis.call('HGET', K_META, 'memory') ~= 'b' then return end
  for _, entry in ipairs(entries) do
    local idx, keys = tostring(entry[1]), entry[2]
    redis.call('HSET', K_WRITES, idx, table.concat(keys, ','))
    for _, key in ipairs(keys) do
      redis.call('HINCRBY', K_WRITERS_LEFT, key, 1)
      local ops = redis.call('HGET', K_WRITER_OPS, key)
      if ops and ops ~= '' then ops = ops .. ',' .. idx else ops = idx end
      redis.call('HSET', K_WRITER_OPS, key, ops)
    end
  end
  redis.call('HSET', K_META, 'writers', '1')
  writers_flag = true
end

-- A key is hopeless when it has declared writers, all of them ended, and
-- it does not exist.
local function key_hopeless(key)
  local left = redis.call('HGET', K_WRITERS_LEFT, key)
  if not left or tonumber(left) > 0 then return false end
  return redis.call('EXISTS', k_mem(key)) == 0
end

-- Meta `duration_sum_ms`: the durations of the final records, summed (a
-- batch's sequential time, read with its meta: a list of batches shows a
-- speedup without reading every op). `duration` is the record's `d`: a
-- string of digits, or '' / nil for none.
local function add_duration(duration)
  if duration and string.match(duration, '^%d+$') and duration ~= '0' then
    redis.call('HINCRBY', K_META, 'duration_sum_ms', duration)
  end
end

-- `duration`: the record's `d`, added to meta `duration_sum_ms`.
local function end_op(idx, code, result_json, duration)
  redis.call('HSET', K_STATE, idx, code)
  redis.call('HDEL', K_PENDING, idx)
  redis.call('ZREM', K_LEASES, idx)
  redis.call('ZREM', K_DELAYED, idx)
  redis.call('HINCRBY', K_META, COUNTER[code], 1)
  redis.call('HSET', K_RESULT, idx, result_json)
  add_duration(duration)
  writers_ended({ idx })
end

-- `idx` just ended with `code`: count down or skip its dependents,
-- transitively (a worklist, not recursion). Returns how many became ready.
local function propagate(idx, code)
  local became_ready = 0
  local queue_idx, queue_code, head = { idx }, { code }, 1
  while head <= #queue_idx do
    local ended, ended_code = queue_idx[head], queue_code[head]
    head = head + 1
    local _, _, _, dependents = op_info(ended)
    for dependent in string.gmatch(dependents or '', '%d+') do
      local _, always = op_info(dependent)
      if ended_code == 'S' or always then
        became_ready = became_ready + count_down(dependent)
      else
        local state = redis.call('HGET', K_STATE, dependent)
        if state and not FINAL[state] then
          local reason = 'dependency `' .. ended .. '` ' .. (ENDED_WORD[ended_code] or 'skipped')
          local cause = cause_dependency(ended, ended_code)
          local attempt = attempts_of(dependent)
          end_op(dependent, 'K', cjson.encode({ e = reason, c = cause }))
          event('skipped', dependent, attempt, '', reason, nil, cause)
          queue_idx[#queue_idx + 1] = dependent
          queue_code[#queue_code + 1] = 'K'
        end
      end
    end
  end
  return became_ready
end

-- Cancels every op whose state is in `states` (a set of codes), in index
-- order, and empties the ready queues. Scans the state hash once (only
-- cancel and fail_fast do this). `cause`: what `reason` names (nil: none).
-- Returns a flat list idx, attempt, was_running.
local function cancel_where(states, reason, cause)
  local all = redis.call('HGETALL', K_STATE)
  local selected = {}
  for position = 1, #all, 2 do
    if states[all[position + 1]] then
      selected[#selected + 1] = tonumber(all[position])
    end
  end
  table.sort(selected)
  local out = {}
  local result_json = cjson.encode({ e = reason, c = cause })
  for _, idx in ipairs(selected) do
    local was_running = redis.call('HGET', K_STATE, idx) == 'U'
    if was_running then redis.call('HINCRBY', K_META, 'running', -1) end
    local attempt = attempts_of(idx)
    end_op(idx, 'C', result_json)
    event('cancelled', idx, attempt, '', reason, nil, cause)
    out[#out + 1] = idx
    out[#out + 1] = attempt
    out[#out + 1] = was_running and 1 or 0
  end
  for priority = 0, PRIORITY_LEVELS - 1 do redis.call('DEL', k_ready(priority)) end
  return out
end

-- The message of the `retrying` event of each failed op the sequential pass
-- runs again (as `sequential_pass_message` in src/model.rs).
local function sequential_pass_message(failed)
  local noun = 'ops'
  if failed == 1 then noun = 'op' end
  return string.format('retry_failed: sequential pass after the parallel pass (%d %s failed): '
    .. 'one last attempt each, one op at a time', failed, noun)
end

-- The message of the `retrying` event of each skipped op the sequential pass
-- queues again (as `SEQUENTIAL_PASS_REQUEUED` in src/model.rs).
local SEQUENTIAL_PASS_REQUEUED =
  'retry_failed: sequential pass: queued again (it was skipped in the parallel pass)'

-- `retry_failed: sequential` (see Store::complete): every op has ended and
-- `failed` of them failed. Every Failed or Skipped op goes back to Waiting,
-- pending = how many of its dependencies are among them; its memory waits
-- count as arrived (so a late arrival never counts it down), its wait
-- deadline and final record are dropped. Those pending nothing are queued
-- in index order. Meta `sequential` = 1 marks the pass: claim runs one op
-- at a time, every failure is final, and no second pass follows. One scan
-- of the state hash, once per batch. Returns how many became ready.
local function start_sequential_pass(failed)
  local all = redis.call('HGETALL', K_STATE)
  local selected, again = {}, {}
  for position = 1, #all, 2 do
    local code = all[position + 1]
    if code == 'F' or code == 'K' then
      local idx = tonumber(all[position])
      selected[#selected + 1] = idx
      again[idx] = code
    end
  end
  table.sort(selected)
  local pending, failed_count, skipped_count = {}, 0, 0
  for _, idx in ipairs(selected) do
    if again[idx] == 'F' then failed_count = failed_count + 1 else skipped_count = skipped_count + 1 end
    local _, _, _, dependents = op_info(idx)
    for dependent in string.gmatch(dependents or '', '%d+') do
      local dependent_idx = tonumber(dependent)
      if again[dependent_idx] then
        pending[dependent_idx] = (pending[dependent_idx] or 0) + 1
      end
    end
  end
  redis.call('HSET', K_META, 'sequential', '1')
  -- (Never HINCRBY by -0: Lua writes it '-0', which Redis refuses.)
  if failed_count > 0 then redis.call('HINCRBY', K_META, 'failed', -failed_count) end
  if skipped_count > 0 then redis.call('HINCRBY', K_META, 'skipped', -skipped_count) end
  -- Every op had ended, so the queues hold nothing claimable: start clean,
  -- so the pass's order is exactly index order.
  for priority = 0, PRIORITY_LEVELS - 1 do redis.call('DEL', k_ready(priority)) end
  local message = sequential_pass_message(failed)
  local became_ready = 0
  for _, idx in ipairs(selected) do
    local raw = redis.call('HGET', K_WAIT_INFO, idx)
    if raw then
      local info = cjson.decode(raw)
      for _, key in ipairs(info.a or {}) do redis.call('SADD', K_ARRIVED, idx .. '|' .. key) end
      if #(info.y or {}) > 0 then redis.call('SADD', K_ANY_DONE, idx) end
    end
    redis.call('ZREM', K_DEADLINES, idx)
    -- Its record goes, and its duration with it from the sum.
    local record = redis.call('HGET', K_RESULT, idx)
    if record then
      local ok, decoded = pcall(cjson.decode, record)
      local d = ok and type(decoded) == 'table' and decoded.d
      if type(d) == 'string' and string.match(d, '^%d+$') and d ~= '0' then
        redis.call('HINCRBY', K_META, 'duration_sum_ms', '-' .. d)
      end
    end
    redis.call('HDEL', K_RESULT, idx)
    if again[idx] == 'F' then
      event('retrying', idx, attempts_of(idx), '', message, nil)
    else
      event('retrying', idx, attempts_of(idx), '', SEQUENTIAL_PASS_REQUEUED, nil)
    end
    local left = pending[idx] or 0
    if left > 0 then
      redis.call('HSET', K_STATE, idx, 'W')
      redis.call('HSET', K_PENDING, idx, left)
    else
      local priority = op_info(idx)
      push_ready(idx, priority or (PRIORITY_LEVELS - 1))
      became_ready = became_ready + 1
    end
  end
  return became_ready
end

-- Calls visit(key, what) for every key of the batch's own memory scope:
-- what = 'value' (a value, or one chunk of a large one), 'waiters' (its
-- waiters set) or 'index' (the scope's key index, change log, counter).
-- Nothing when the batch's memory is a shared namespace.
local function each_own_memory_key(visit)
  if redis.call('HGET', K_META, 'memory') ~= 'b' then return end
  for _, key in ipairs(redis.call('ZRANGE', K_MKEYS, 0, -1)) do
    local chunked = redis.call('HMGET', k_mem(key), 'gen', 'n')
    visit(k_mem(key), 'value')
    visit(k_waiters(key), 'waiters')
    if chunked[1] and chunked[1] ~= '' then
      for number = 0, tonumber(chunked[2] or '0') - 1 do
        visit(k_chunk(chunked[1], number), 'value')
      end
    end
  end
  for _, key in ipairs({K_MKEYS, K_CHANGES, K_REVISION}) do visit(key, 'index') end
end

-- Retention's safety net: a finished batch's records, and its own memory
-- scope, expire `retain` ms from now. A memory value with a sooner expiry of its own
-- keeps it (PEXPIRE … LT). What a finished batch still holds per op is its
-- state, attempts, result and events; see keys.rs.
local function expire_finished(retain)
  for _, key in ipairs({K_META, P .. 'spec', K_STATE, K_ATTEMPTS, K_RESULT, K_EVENTS,
      K_SPEC_ADDED, K_OUTBOX, K_SPAWN_KEYS}) do
    redis.call('PEXPIRE', key, retain)
  end
  each_own_memory_key(function(key, what)
    if what == 'value' then
      redis.call('PEXPIRE', key, retain, 'LT')
    elseif what == 'index' then
      redis.call('PEXPIRE', key, retain)
    end
  end)
end

-- How a writer ended, for a hopeless key's message (as `hopeless_message`
-- in src/model.rs).
local WRITER_ENDED = { F = 'failed', K = 'was skipped', C = 'was cancelled',
  S = 'succeeded without writing it' }
local WRITER_ENDED_SHORT = { F = 'failed', K = 'skipped', C = 'cancelled',
  S = 'succeeded without writing it' }
local HOPELESS_NAMED = 5

-- The message and the cause of skipping a waiter of hopeless key `key`:
-- its first HOPELESS_NAMED writers with how each ended (`w`), how many more
-- there are (`m`).
local function hopeless_message(key)
  local writers = {}
  for writer in string.gmatch(redis.call('HGET', K_WRITER_OPS, key) or '', '%d+') do
    writers[#writers + 1] = writer
  end
  local states = hmget_many(K_STATE, writers)
  local cause_writers = {}
  for position = 1, math.min(#writers, HOPELESS_NAMED) do
    cause_writers[position] = { tonumber(writers[position]), states[position] or '' }
  end
  local cause = { k = key, w = cause_writers, m = math.max(#writers - HOPELESS_NAMED, 0) }
  local head = 'key `' .. key .. '` will never be written: '
  if #writers == 1 then
    return head .. 'its writer `' .. writers[1] .. '` ' .. (WRITER_ENDED[states[1]] or 'ended'),
      cause
  end
  local named = {}
  for position = 1, math.min(#writers, HOPELESS_NAMED) do
    named[#named + 1] = '`' .. writers[position] .. '` ('
      .. (WRITER_ENDED_SHORT[states[position]] or 'ended') .. ')'
  end
  local text = head .. 'its writers ' .. table.concat(named, ', ')
  if #writers > HOPELESS_NAMED then
    text = text .. string.format(' and %d more', #writers - HOPELESS_NAMED)
  end
  return text, cause
end

-- Every key of op `idx`'s `wait_for_any` group is hopeless.
local function any_group_hopeless(idx)
  local raw = redis.call('HGET', K_WAIT_INFO, idx)
  if not raw then return false end
  local group = cjson.decode(raw).y or {}
  if #group == 0 then return false end
  for _, key in ipairs(group) do
    if not key_hopeless(key) then return false end
  end
  return true
end

-- Works off HOPELESS (keys whose last declared writer ended this step): a
-- key that exists is fine; else its waiters still Waiting — for a
-- `wait_for` key, or for a `wait_for_any` group all of whose keys are
-- hopeless — are skipped ("key `k` will never be written: …") with their
-- dependents, as `after:` skips are; a `run_if: always` waiter counts the
-- wait as satisfied instead. Skips end more ops, which may make more keys
-- hopeless: a worklist. Returns how many ops became ready.
local function settle_hopeless()
  local became_ready, head = 0, 1
  while head <= #HOPELESS do
    local key = HOPELESS[head]
    head = head + 1
    if redis.call('EXISTS', k_mem(key)) == 0 then
      local waiters_key = k_waiters(key)
      local waits = {}
      for _, member in ipairs(redis.call('SMEMBERS', waiters_key)) do
        local idx, mode = parse_waiter(member, key)
        if idx then waits[#waits + 1] = { idx, mode, member } end
      end
      table.sort(waits, function(left, right)
        if left[1] ~= right[1] then return left[1] < right[1] end
        return left[2] < right[2]
      end)
      local message, cause = nil, nil
      for _, wait in ipairs(waits) do
        local idx, mode = tostring(wait[1]), wait[2]
        if redis.call('HGET', K_STATE, idx) == 'W'
            and (mode ~= 'any' or any_group_hopeless(idx)) then
          redis.call('SREM', waiters_key, wait[3])
          local _, always = op_info(idx)
          if always then
            local _, ready = arrive(idx, key, mode)
            became_ready = became_ready + ready
          else
            if not message then message, cause = hopeless_message(key) end
            end_op(idx, 'K', cjson.encode({ e = message, c = cause }))
            event('skipped', idx, attempts_of(idx), '', message, nil, cause)
            became_ready = became_ready + propagate(idx, 'K')
          end
        end
      end
    end
  end
  HOPELESS = {}
  return became_ready
end

-- Finishes the batch when every op has ended (after settling hopeless
-- keys: see settle_hopeless). Returns the batch state code, or '' when it
-- is not finished (or was already); then how many ops became ready: by
-- settling, and by a sequential pass it started.
local finish_now
local function finish_if_done()
  local settled = settle_hopeless()
  local state, pass_ready = finish_now()
  return state, pass_ready + settled
end

finish_now = function()
  local m = redis.call('HMGET', K_META, 'state', 'total', 'succeeded', 'failed',
    'skipped', 'cancelled', 'cancel_requested', 'deadline_fired', 'fail_fast_fired',
    'retry_failed', 'sequential', 'retain_ms')
  if m[1] ~= 'running' then return '', 0 end
  local total = tonumber(m[2] or '0')
  local succeeded, failed = tonumber(m[3] or '0'), tonumber(m[4] or '0')
  local skipped, cancelled = tonumber(m[5] or '0'), tonumber(m[6] or '0')
  if succeeded + failed + skipped + cancelled < total then return '', 0 end
  if failed > 0 and m[10] == '1' and m[11] ~= '1'
    and m[7] ~= '1' and m[8] ~= '1' and m[9] ~= '1' then
    return '', start_sequential_pass(failed)
  end
  local state
  if m[7] == '1' then
    state = 'cancelled'
  elseif m[8] == '1' then
    -- expire_deadline set the error already.
    state = 'failed'
  elseif succeeded == total then
    state = 'succeeded'
  else
    state = 'failed'
    redis.call('HSET', K_META, 'error', string.format('%d failed, %d skipped, %d cancelled',
      failed, skipped, cancelled))
  end
  redis.call('HSET', K_META, 'state', state, 'finished_ms', NOW)
  event('finished', nil, 0, '', redis.call('HGET', K_META, 'error') or '', state)
  for priority = 0, PRIORITY_LEVELS - 1 do redis.call('DEL', k_ready(priority)) end
  -- Compaction: what only a running batch needs goes (UNLINK: freed off the
  -- main thread, so a million-op batch does not stall Redis). What stays per
  -- op: its state, attempts, result, events and spec.
  redis.call('UNLINK', K_LEASES, K_DELAYED, K_INFO, K_PENDING, K_ARRIVED, K_ANY_DONE,
    K_DEADLINES, K_WAIT_INFO, K_HANDED_BACK, K_WRITES, K_WRITERS_LEFT, K_WRITER_OPS,
    K_LOST_WORKERS, K_RUNNING_ON)
  local retain = tonumber(m[12] or '0')
  -- The coordinators delete the batch (UNLINK) once its retention ran out;
  -- this TTL, an hour later, only catches a batch they never learnt of.
  if retain > 0 then expire_finished(retain + 3600000) end
  return state, 0
end

-- `idx` failed for good: on a fail_fast batch, the first such failure
-- cancels every op still waiting or ready.
local function apply_fail_fast(idx)
  local m = redis.call('HMGET', K_META, 'on_failure', 'fail_fast_fired')
  if m[1] == 'fail_fast' and m[2] ~= '1' then
    redis.call('HSET', K_META, 'fail_fast_fired', '1')
    cancel_where({ W = true, R = true }, 'cancelled: fail_fast after op `' .. idx .. '` failed',
      cause_fail_fast(idx))
  end
end

-- Every key of a batch's records and of its own memory scope (drop_batch.lua
-- deletes them; reserve.lua clears a half-written batch with them).
local function batch_record_keys()
  local all = {K_META, P .. 'spec', K_STATE, K_ATTEMPTS, K_RESULT, K_EVENTS, K_SPEC_ADDED,
    K_OWNER, K_LEASES, K_DELAYED, K_INFO, K_PENDING, K_ARRIVED, K_ANY_DONE, K_DEADLINES,
    K_WAIT_INFO, K_HANDED_BACK, K_SPAWN_KEYS, K_LOST_WORKERS, K_RUNNING_ON,
    K_WRITES, K_WRITERS_LEFT, K_WRITER_OPS, K_OUTBOX}
  for priority = 0, PRIORITY_LEVELS - 1 do all[#all + 1] = k_ready(priority) end
  each_own_memory_key(function(key) all[#all + 1] = key end)
  return all
end

-- ---- end of common.lua; the verb's script follows ----
