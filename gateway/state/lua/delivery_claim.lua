-- Claim due deliveries: each one's attempt count goes up, its owner is set and it is due
-- again a lease later (taken over then if its owner died).
-- KEYS: due zset, payload hash, meta hash; ARGV: owner, limit, lease ms.
-- Returns a flat list: id, payload, attempt, id, payload, attempt, …
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[2])) do
  local payload = redis.call('HGET', KEYS[2], id)
  if payload then
    local meta = redis.call('HGET', KEYS[3], id) or '0 '
    local attempt = tonumber(string.match(meta, '^(%d+)')) + 1
    redis.call('HSET', KEYS[3], id, attempt .. ' ' .. ARGV[1])
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), id)
    out[#out + 1] = id
    out[#out + 1] = payload
    out[#out + 1] = attempt
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
