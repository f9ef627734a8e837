-- revoke_token.lua: revokes an API token and bumps the revocation counter
-- that every coordinator polls to drop its cache of checked tokens.
-- KEYS[1]  the tokens hash `volley:{tokens}` (field: id, value: record JSON)
-- KEYS[2]  the revoked hash `volley:{tokens}:revoked` (id → unix ms)
-- KEYS[3]  the revocation counter `volley:{tokens}:revocations`
-- ARGV[1]  token id  ARGV[2]  now, unix ms
-- Returns: 0 for an unknown token, 1 once revoked (a second revocation
--          keeps the first time and still bumps the counter).
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[3])
return 1
