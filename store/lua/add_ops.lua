-- add_ops.lua: grows a running batch (see Store::add_ops) in one step: the
-- new ops' info/state/pending/deadlines, total, the spec chunk, `added`,
-- then the ready/skip effects: ops waiting for nothing are queued, and each
-- edge from an existing op is added to its dependents (if it has not ended)
-- or applied at once as `complete` would have (count down after a success
-- or for run_if_always, else skip, transitively). Memory waits are
-- registered afterwards by the caller, with create_batch's code.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- ARGV[4] first_index  ARGV[5] count  ARGV[6] spec chunk
-- then 5 fields per new op: packed info (dependents among the new ops),
--   pending count, existing ops it runs after (comma-separated),
--   wait deadline ms ('0' none), wait info JSON ('' when it waits for no key)
-- then ARGV[7 + count * 5]: who added them, appended to the `added` event's
--   message ('' for nothing)
-- then ARGV[8 + count * 5]: the new ops' declared memory writes, JSON
--   `[[idx, [keys...]], ...]` ('' none; see add_writers in common.lua)
-- then ARGV[9 + count * 5]: an idempotency key ('' for none) and
--   ARGV[10 + count * 5]: the record kept under it (see Store::add_ops)
-- Returns: { status (0 ok, -1 no such batch, -2 the batch is not running:
--            reason is its state code, -3 the key was used: reason is its
--            record, -4 fail_fast fired, -5 first_index is not the batch's
--            op count: reason is that count), reason, became_ready, finished
--            batch state code or '', memory scope code }
local m = redis.call('HMGET', K_META, 'state', 'total', 'fail_fast_fired', 'memory')
if not m[1] or m[1] == 'creating' then return { -1, '', 0, '', '' } end
local once_key = ARGV[9 + tonumber(ARGV[5]) * 5] or ''
if once_key ~= '' then
  local record = redis.call('HGET', K_SPAWN_KEYS, once_key)
  if record then return { -3, record, 0, '', '' } end
end
if m[1] ~= 'running' then return { -2, m[1], 0, '', '' } end
if m[3] == '1' then return { -4, '', 0, '', '' } end
local first, count = tonumber(ARGV[4]), tonumber(ARGV[5])
local total = tonumber(m[2] or '0')
if first ~= total then return { -5, tostring(total), 0, '', '' } end
local function field(offset, number) return ARGV[7 + offset * 5 + number] end
for offset = 0, count - 1 do
  local idx = first + offset
  local pending = tonumber(field(offset, 1))
  redis.call('HSET', K_INFO, idx, field(offset, 0))
  redis.call('HSET', K_STATE, idx, 'W')
  if pending > 0 then redis.call('HSET', K_PENDING, idx, pending) end
  if field(offset, 3) ~= '0' then redis.call('ZADD', K_DEADLINES, field(offset, 3), idx) end
  if field(offset, 4) ~= '' then redis.call('HSET', K_WAIT_INFO, idx, field(offset, 4)) end
end
redis.call('HSET', K_META, 'total', total + count)
add_writers(ARGV[8 + count * 5])
if once_key ~= '' then
  redis.call('HSET', K_SPAWN_KEYS, once_key, ARGV[10 + count * 5])
end
redis.call('RPUSH', K_SPEC_ADDED, ARGV[6])
local note = ARGV[7 + count * 5] or ''
if note ~= '' then note = ' ' .. note end
event('added', nil, 0, '', count .. ' ops added' .. note, nil)
local became_ready = 0
for offset = 0, count - 1 do
  local idx = first + offset
  if tonumber(field(offset, 1)) == 0 then
    local priority = op_info(idx)
    push_ready(idx, priority or (PRIORITY_LEVELS - 1))
    became_ready = became_ready + 1
  end
end
for offset = 0, count - 1 do
  local idx = first + offset
  for before in string.gmatch(field(offset, 2), '%d+') do
    local state = redis.call('HGET', K_STATE, before)
    if FINAL[state] then
      local _, always = op_info(idx)
      if state == 'S' or always then
        became_ready = became_ready + count_down(idx)
      elseif not FINAL[redis.call('HGET', K_STATE, idx)] then
        local reason = 'dependency `' .. before .. '` ' .. (ENDED_WORD[state] or 'skipped')
        local cause = cause_dependency(before, state)
        end_op(idx, 'K', cjson.encode({ e = reason, c = cause }))
        event('skipped', idx, attempts_of(idx), '', reason, nil, cause)
        became_ready = became_ready + propagate(idx, 'K')
      end
    else
      local raw = redis.call('HGET', K_INFO, before)
      if string.sub(raw, -1) == '|' then
        raw = raw .. idx
      else
        raw = raw .. ',' .. idx
      end
      redis.call('HSET', K_INFO, before, raw)
    end
  end
end
local finished, pass_ready = finish_if_done()
ring()
return { 0, '', became_ready + pass_ready, finished, m[4] or 'b' }
