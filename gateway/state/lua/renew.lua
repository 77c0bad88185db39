-- Extend the leases a process still runs, and keep the names that hold them alive.
-- KEYS: the lease zsets, then names that only need their ttl kept (e.g. reservations)
-- ARGV: lease ms, ttl ms, how many of KEYS are lease zsets, then the lease ids
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
for i = 1, tonumber(ARGV[3]) do
  for j = 4, #ARGV do
    redis.call('ZADD', KEYS[i], 'XX', until_ms, ARGV[j])
  end
end
for i = 1, #KEYS do
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return 1
