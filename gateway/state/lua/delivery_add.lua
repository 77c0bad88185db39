-- Keep a pending delivery, due now, unless its id is already kept.
-- KEYS: due zset, payload hash, meta hash; ARGV: id, payload. Returns 1 if added.
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[3], ARGV[1], '0 ')
redis.call('ZADD', KEYS[1], now, ARGV[1])
return 1
