-- A job ended: its final record (kept for the retention) and no lease any more, only for the
-- holder of its lease, so a replica that lost the job cannot overwrite the one that took it.
-- KEYS: record, leases zset, owners hash; ARGV: job id, owner, record, ttl ms.
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
