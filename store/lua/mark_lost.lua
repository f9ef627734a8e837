-- mark_lost.lua: for a batch the store does not hold (no meta), writes a
-- minimal meta in state `lost` and its `finished` event (seq 1), so status
-- and watchers see it. A batch it holds is left alone.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now (see common.lua)
-- ARGV[4]  reason (the batch's error and the event's message)
-- Returns: 1 if marked, 0 if the batch exists.
if redis.call('EXISTS', K_META) == 1 then return 0 end
redis.call('HSET', K_META, 'name', '', 'created_ms', NOW, 'finished_ms', NOW,
  'max_parallel', 0, 'on_failure', 'continue', 'total', 0, 'succeeded', 0, 'failed', 0,
  'skipped', 0, 'cancelled', 0, 'running', 0, 'error', ARGV[4], 'memory', 'b',
  'deadline_ms', 0, 'state', 'lost')
event('finished', nil, 0, '', ARGV[4], 'lost')
ring()
return 1
