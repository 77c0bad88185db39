-- Take a lease-lock, or extend it if this owner already holds it.
-- KEYS: the lock; ARGV: owner, ttl ms. Returns 1 if the owner holds it now.
local holder = redis.call('GET', KEYS[1])
if not holder or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
