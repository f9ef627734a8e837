-- hold.lua: takes or keeps a coordinator's hold on a running batch. Free
-- (no `owner` key: never held, released, or its PX ran out): the caller
-- becomes the owner with a new fence token, one more than the last handed
-- out (`owner_token` in meta, so tokens only grow). Held by the caller:
-- the hold is extended, same token. Held by another: refused. A batch not
-- running is never held.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua; the hold runs on the
--            server's clock, so now is not used)
-- ARGV[4]  coordinator id
-- ARGV[5]  ttl of the hold, ms (at least 1)
-- Returns: { status, token, holder }: status -1 no such batch (or still
--          being created), 0 not held by the caller (holder: who holds it,
--          '' when the batch is not running), 1 held (token: its fence).
local state = redis.call('HGET', K_META, 'state')
if not state or state == 'creating' then return { -1, 0, '' } end
if state ~= 'running' then return { 0, 0, '' } end
local current = redis.call('GET', K_OWNER)
if current then
  local coordinator, token = parse_owner(current)
  if coordinator ~= ARGV[4] then return { 0, 0, coordinator or '' } end
  redis.call('PEXPIRE', K_OWNER, ARGV[5])
  return { 1, tonumber(token), '' }
end
local token = redis.call('HINCRBY', K_META, 'owner_token', 1)
redis.call('SET', K_OWNER, ARGV[4] .. '|' .. token, 'PX', ARGV[5])
return { 1, token, '' }
