-- Take a slot on the least busy usable upstream key, in one round trip, unless the account
-- (all keys of the pool) is at its cap or at the cap of this model.
-- KEYS: account slots zset, account model slots zset, then per key, in order: state hash,
--       slots zset
-- ARGV: lease id, lease ms, per-key cap, account cap, account model cap (< 0: none)
-- Returns {index (1-based), 0} for a slot, {0, retry ms} when no key is usable, {-1, 0} when busy.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, lease, cap = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local account_cap, model_cap = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local full = (account_cap >= 0 and redis.call('ZCARD', KEYS[1]) >= account_cap)
  or (model_cap >= 0 and redis.call('ZCARD', KEYS[2]) >= model_cap)
local best, best_load, usable, wait = 0, 0, 0, -1
for i = 3, #KEYS, 2 do
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
    local load = redis.call('ZCARD', KEYS[i + 1])
    if not full and load < cap and (best == 0 or load < best_load) then
      best, best_load = i, load
    end
  end
end
if best == 0 then
  if usable == 0 then return {0, wait} end
  return {-1, 0}
end
for _, name in ipairs({KEYS[best + 1], KEYS[1], KEYS[2]}) do
  redis.call('ZADD', name, now + lease, id)
  redis.call('PEXPIRE', name, lease * 4)
end
return {(best - 1) / 2, 0}
