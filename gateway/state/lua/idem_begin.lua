-- Claim an idempotency key, or report who has it.
-- KEYS: the record hash
-- ARGV: body hash, pending ttl ms
-- Returns {'new'} or {state, body hash, response}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'state', 'pending', 'body', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'new'}
end
local r = redis.call('HMGET', KEYS[1], 'state', 'body', 'response')
return {r[1], r[2], r[3] or ''}
