-- End of a request: free its in-flight lease and give back what it reserved but did not use.
-- KEYS: in-flight zset, images-today counter, spend-this-month counter
-- ARGV: request id, images to give back, micro-USD to give back
redis.call('ZREM', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('DECRBY', KEYS[2], ARGV[2]) end
if tonumber(ARGV[3]) > 0 then redis.call('DECRBY', KEYS[3], ARGV[3]) end
return 1
