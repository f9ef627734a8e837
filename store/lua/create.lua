-- create.lua: the last step of create_batch, after the pipelined writes of
-- info/state/pending/ready/deadlines and the registration of waits: makes
-- the batch visible (state running), appends `submitted` (seq 1), finishes
-- an empty batch.
-- KEYS[1]  batch prefix `volley:{b:<batch>}:`
-- ARGV[1..3] channel, batch id, now = created_ms (see common.lua)
-- ARGV[4] name  ARGV[5] max_parallel  ARGV[6] on_failure code  ARGV[7] total
-- ARGV[8] memory scope: 'b' (the batch's own) or 'm:<namespace>'
-- ARGV[9] deadline, unix ms ('0': none)
-- ARGV[10] retry_failed: '1' for a sequential pass, '0' for none
-- ARGV[11] retain_ms: how long the batch's records stay once it finished
--          ('0': until deleted)
-- ARGV[12] tenant: the submitter's
-- ARGV[13] the `submitted` event's message (who submitted it)
-- ARGV[14] lost-worker retries per op (see expire_leases.lua)
-- Returns: the batch state code if the batch finished at once (empty), else ''.
redis.call('HSET', K_META, 'name', ARGV[4], 'created_ms', NOW, 'max_parallel', ARGV[5],
  'on_failure', ARGV[6], 'total', ARGV[7], 'succeeded', 0, 'failed', 0, 'skipped', 0,
  'cancelled', 0, 'running', 0, 'error', '', 'memory', ARGV[8], 'deadline_ms', ARGV[9],
  'retry_failed', ARGV[10], 'retain_ms', ARGV[11], 'tenant', ARGV[12],
  'lost_worker_retries', ARGV[14], 'state', 'running')
event('submitted', nil, 0, '', ARGV[13], nil)
local finished = finish_if_done()
ring()
return finished
