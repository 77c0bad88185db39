-- Team admission in one round trip: rpm window, in-flight lease, daily images, monthly spend.
-- KEYS: rpm zset, in-flight zset, images-today counter, spend-this-month counter,
--       reservations hash (request id -> "images micros images-key\nspend-key"), settled zset
-- ARGV: request id, rpm limit, concurrency limit, lease ms, image limit, images,
--       image ttl s, budget micro-USD, cost micro-USD, spend ttl s   (limits < 0: none)
-- Returns {verdict, ms, remaining}; verdict ok | rpm | concurrency | images | budget | settled.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = ARGV[1]
local rpm, conc, lease = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local img_limit, images, img_ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local budget, cost, spend_ttl = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])

-- Settled before it arrived: this admission's answer was lost and its request has ended.
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
if redis.call('ZSCORE', KEYS[6], id) then
  return {'settled', 0, 0}
end

-- Leases that expired (a killed replica, a lost answer) give their reservations back.
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  local held = redis.call('HGET', KEYS[5], gone)
  if held then
    local n, micros, names = string.match(held, '^(%d+) (%d+) (.*)$')
    local img_key, spend_key = string.match(names, '^(.-)\n(.*)$')
    if img_key == KEYS[3] then redis.call('DECRBY', KEYS[3], n) end
    if spend_key == KEYS[4] then redis.call('DECRBY', KEYS[4], micros) end
    redis.call('HDEL', KEYS[5], gone)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
local used = redis.call('ZCARD', KEYS[1])
local function reset_ms()
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if oldest[2] then return tonumber(oldest[2]) + 60000 - now end
  return 0
end
if rpm >= 0 and used >= rpm then
  return {'rpm', reset_ms(), 0}
end
if conc >= 0 and redis.call('ZCARD', KEYS[2]) >= conc then
  return {'concurrency', 1000, rpm - used}
end
local images_used = tonumber(redis.call('GET', KEYS[3]) or '0')
if img_limit >= 0 and images_used + images > img_limit then
  return {'images', 0, rpm - used}
end
local spent = tonumber(redis.call('GET', KEYS[4]) or '0')
if budget >= 0 and spent + cost > budget then
  return {'budget', 0, rpm - used}
end
redis.call('ZADD', KEYS[1], now, id)
redis.call('PEXPIRE', KEYS[1], 60000)
redis.call('ZADD', KEYS[2], now + lease, id)
redis.call('EXPIRE', KEYS[2], spend_ttl)
redis.call('HSET', KEYS[5], id, ARGV[6] .. ' ' .. ARGV[9] .. ' ' .. KEYS[3] .. '\n' .. KEYS[4])
redis.call('EXPIRE', KEYS[5], spend_ttl)
redis.call('INCRBY', KEYS[3], images)
redis.call('EXPIRE', KEYS[3], img_ttl)
redis.call('INCRBY', KEYS[4], cost)
redis.call('EXPIRE', KEYS[4], spend_ttl)
return {'ok', reset_ms(), rpm - used - 1}
