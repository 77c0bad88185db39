-- What a team's admission counters hold now, read without changing them (for the console).
-- KEYS: rpm zset, in-flight zset, images-today counter, spend-this-month counter
-- Returns: requests in the window, ms until the oldest leaves it, live leases, images, spend
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reset = 0
local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - 60000), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
if oldest[2] then reset = tonumber(oldest[2]) + 60000 - now end
return {
  redis.call('ZCOUNT', KEYS[1], '(' .. (now - 60000), '+inf'),
  reset,
  redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf'),
  tonumber(redis.call('GET', KEYS[3]) or '0'),
  tonumber(redis.call('GET', KEYS[4]) or '0'),
}
