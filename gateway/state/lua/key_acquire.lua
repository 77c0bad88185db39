-- Take a slot on the least busy usable upstream key, in one round trip.
-- KEYS: per key, in order: state hash, slots zset, model slots zset
-- ARGV: lease id, lease ms, per-key cap, model cap (< 0: none)
-- Returns {index (1-based), 0} for a slot, {0, retry ms} when no key is usable, {-1, 0} when busy.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, lease, cap, model_cap = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local best, best_load, usable, wait = 0, 0, 0, -1
for i = 1, #KEYS, 3 do
  local state = redis.call('HMGET', KEYS[i], 'disabled', 'cooldown_until', 'recheck_at')
  local cooldown = tonumber(state[2] or '0')
  local until_ms = -1
  if state[1] == '1' then
    until_ms = math.max(tonumber(state[3] or '0') - now, 1000)
  elseif cooldown > now then
    until_ms = cooldown - now
  end
  if until_ms >= 0 then
    if wait < 0 or until_ms < wait then wait = until_ms end
  else
    usable = usable + 1
    redis.call('ZREMRANGEBYSCORE', KEYS[i + 1], '-inf', now)
    redis.call('ZREMRANGEBYSCORE', KEYS[i + 2], '-inf', now)
    local load = redis.call('ZCARD', KEYS[i + 1])
    local model_load = redis.call('ZCARD', KEYS[i + 2])
    if load < cap and (model_cap < 0 or model_load < model_cap) and (best == 0 or load < best_load) then
      best, best_load = i, load
    end
  end
end
if best == 0 then
  if usable == 0 then return {0, wait} end
  return {-1, 0}
end
redis.call('ZADD', KEYS[best + 1], now + lease, id)
redis.call('PEXPIRE', KEYS[best + 1], lease * 4)
redis.call('ZADD', KEYS[best + 2], now + lease, id)
redis.call('PEXPIRE', KEYS[best + 2], lease * 4)
return {(best + 2) / 3, 0}
