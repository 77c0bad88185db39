-- Replace a running job's record, only for the holder of its lease.
-- KEYS: record, owners hash; ARGV: job id, owner, record. Returns 1 if written.
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
return 1
