-- register_shared.lua: the namespace half of registering waits on a shared
-- memory scope: for each (op, key, mode) of one batch, adds the waiter
-- `<batch>|<op>|<key>|<mode>` to the key's waiter set, or, when the key is
-- present, reports it instead (the caller then applies it with arrive.lua
-- in the batch's slot). One script, so a concurrent write of the key either
-- pops this waiter or is seen here as present — never neither.
-- KEYS[1]  namespace prefix `volley:{m:<namespace>}:`
-- ARGV[1..3] channel, id of the batch whose ops wait, now (see common.lua)
-- ARGV[4], ARGV[5], ARGV[6], ...  op index, memory key, 'all'|'any' (triples)
-- Returns: a flat list op index, key, mode of the keys already present.
local present = {}
for position = 4, #ARGV, 3 do
  local idx, key, mode = ARGV[position], ARGV[position + 1], ARGV[position + 2]
  if redis.call('EXISTS', k_mem(key)) == 1 then
    present[#present + 1] = idx
    present[#present + 1] = key
    present[#present + 1] = mode
  else
    redis.call('SADD', k_waiters(key), waiter_member(idx, key, mode))
  end
end
return present
