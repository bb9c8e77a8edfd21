-- member.lua: add a group to, or remove it from, one member's group set,
-- and say where the member's sessions are.
--
-- KEYS[1] the member's group set (a device's or a user's)
-- KEYS[2] for a device its route hash, for a user its devices zset
-- ARGV    op ('+' add, '-' remove), group, most groups, kind ('d' device,
--         'u' user), for a user: devices seen since (ms)
--
-- Returns {status, ...}: status 1 changed, 0 already so, -1 not added (the
-- member is in the most groups); then for a device its route node and
-- epoch, for a user the devices it was seen on since the given time.
--
-- One script so the bound holds under concurrent adds, and so the route a
-- node is told about is the one the change saw.
local set, group, most = KEYS[1], ARGV[2], tonumber(ARGV[3])
local status
if ARGV[1] == '+' then
  if redis.call('SISMEMBER', set, group) == 1 then
    status = 0
  elseif redis.call('SCARD', set) >= most then
    status = -1
  else
    redis.call('SADD', set, group)
    status = 1
  end
else
  status = redis.call('SREM', set, group)
end
if ARGV[4] == 'd' then
  local r = redis.call('HMGET', KEYS[2], 'n', 'e')
  return {status, r[1] or '', r[2] or '0'}
end
local out = {status}
for _, d in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[5], '+inf')) do
  out[#out + 1] = d
end
return out
