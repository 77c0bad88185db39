-- End of a request: free its lease, give back what its own reservation still holds and count
-- what it used. A missing reservation (Redis restarted, or its expired lease already gave it
-- back) gives back nothing; the request id is then remembered so a late admission stays out.
-- KEYS: in-flight zset, images-today counter, spend-this-month counter, reservations hash,
--       settled zset
-- ARGV: request id, images used, micro-USD used, image ttl s, spend ttl s, settled ttl ms
local id = ARGV[1]
local held_images, held_micros = 0, 0
local held = redis.call('HGET', KEYS[4], id)
if held then
  local n, micros = string.match(held, '^(%d+) (%d+)')
  held_images, held_micros = tonumber(n), tonumber(micros)
  redis.call('HDEL', KEYS[4], id)
else
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[5], now + tonumber(ARGV[6]), id)
  redis.call('PEXPIRE', KEYS[5], ARGV[6])
end
redis.call('ZREM', KEYS[1], id)
local function charge(key, delta, ttl)
  if delta == 0 then return end
  if redis.call('INCRBY', key, delta) < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
  if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, ttl) end
end
charge(KEYS[2], tonumber(ARGV[2]) - held_images, ARGV[4])
charge(KEYS[3], tonumber(ARGV[3]) - held_micros, ARGV[5])
return 1
