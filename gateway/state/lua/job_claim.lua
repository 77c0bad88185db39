-- Take over a running job whose lease ran out, or extend one's own: one holder at a time.
-- KEYS: leases zset, owners hash; ARGV: job id, owner, lease ms. Returns 1 if now held.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not until_ms then return 0 end
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] and tonumber(until_ms) > now then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
