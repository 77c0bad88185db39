-- A new job: its record, its place in the listing, and its first lease.
-- KEYS: record, listing zset, leases zset, owners hash
-- ARGV: job id, record, record ttl ms, score, owner, lease ms
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[5])
return 1
