-- op_summaries.lua: the summaries of ops [ARGV[4], ARGV[5]) (see
-- Store::op_summaries): state, attempts and the small fields of the result,
-- decoded here so an op's output (up to megabytes) never leaves the server.
-- The Rust side calls it in bounded slices, so one call blocks the server
-- for a few milliseconds at most.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua; unused)
-- ARGV[4]  first index
-- ARGV[5]  end index (exclusive; clipped to the batch's total)
-- ARGV[6]  the most bytes of an error's first line to return (the Rust
--          side cuts again on a character boundary)
-- Returns: { -1, '' } for no such batch; else { total, packed }: per op,
--          `state US attempts US worker US started US duration US cause
--          US <bytes of error> US error` (US = \x1f; the cause is cjson's,
--          so it holds no raw \x1f; the error is counted, so it may), one
--          string for the slice: a reply of a few values, not 7 per op.
local total = redis.call('HGET', K_META, 'total')
if not total then return { -1, '' } end
total = tonumber(total)
local first = tonumber(ARGV[4])
local stop = math.min(tonumber(ARGV[5]), total)
local max_error = tonumber(ARGV[6])
local indices = {}
for idx = first, stop - 1 do indices[#indices + 1] = idx end
if #indices == 0 then return { total, '' } end
local states = hmget_many(K_STATE, indices)
local attempts = hmget_many(K_ATTEMPTS, indices)
local results = hmget_many(K_RESULT, indices)
local rows = {}
for position = 1, #indices do
  local worker, started, duration, err, cause = '', '', '', '', ''
  local raw = results[position]
  if raw then
    local result = cjson.decode(raw)
    worker = result.w or ''
    started = result.s or ''
    duration = result.d or ''
    err = result.e or ''
    if type(err) ~= 'string' then err = '' end
    local newline = string.find(err, '\n', 1, true)
    if newline then err = string.sub(err, 1, newline - 1) end
    if string.sub(err, -1) == '\r' then err = string.sub(err, 1, -2) end
    if #err > max_error then err = string.sub(err, 1, max_error) end
    if result.c ~= nil and result.c ~= cjson.null then cause = cjson.encode(result.c) end
  end
  rows[#rows + 1] = table.concat({ states[position] or '', attempts[position] or '0',
    tostring(worker), tostring(started), tostring(duration), cause, #err, err }, '\31')
end
return { total, table.concat(rows) }
