-- Apply what happened to an upstream key and return its state.
-- KEYS: the key's state hash
-- ARGV: event (ok | rate_limited | failed | disable | enable | claim_recheck), seconds, detail,
--       streak limit, streak cooldown seconds
-- Returns {disabled, cooldown_until ms, recheck_at ms, last_error, recheck claimed (0/1)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local event, seconds, detail = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local key = KEYS[1]
local claimed = 0
if event == 'ok' then
  redis.call('HSET', key, 'failures', 0, 'cooldowns', 0)
elseif event == 'rate_limited' then
  local n = redis.call('HINCRBY', key, 'cooldowns', 1)
  if seconds < 0 then seconds = math.min(300, 5 * 2 ^ (n - 1)) end
  redis.call('HSET', key, 'cooldown_until', now + seconds * 1000, 'last_error', detail)
elseif event == 'failed' then
  local n = redis.call('HINCRBY', key, 'failures', 1)
  redis.call('HSET', key, 'last_error', detail)
  if n >= tonumber(ARGV[4]) then
    redis.call('HSET', key, 'failures', 0, 'cooldown_until', now + tonumber(ARGV[5]) * 1000)
  end
elseif event == 'disable' then
  redis.call('HSET', key, 'disabled', 1, 'recheck_at', now + seconds * 1000, 'last_error', detail)
elseif event == 'enable' then
  redis.call('HSET', key, 'disabled', 0, 'cooldown_until', 0, 'failures', 0, 'cooldowns', 0)
elseif event == 'claim_recheck' then
  local st = redis.call('HMGET', key, 'disabled', 'recheck_at')
  if st[1] == '1' and tonumber(st[2] or '0') <= now then
    redis.call('HSET', key, 'recheck_at', now + seconds * 1000)
    claimed = 1
  end
end
local st = redis.call('HMGET', key, 'disabled', 'cooldown_until', 'recheck_at', 'last_error')
return {
  tonumber(st[1] or '0'), tonumber(st[2] or '0'), tonumber(st[3] or '0'), st[4] or '', claimed
}
