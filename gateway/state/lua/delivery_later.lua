-- Make a claimed delivery due again after a delay, if the caller still owns it.
-- KEYS: due zset, payload hash, meta hash; ARGV: id, owner, delay ms. Returns 1 if moved.
local meta = redis.call('HGET', KEYS[3], ARGV[1])
if not meta or string.match(meta, '^%d+ (.*)$') ~= ARGV[2] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
return 1
