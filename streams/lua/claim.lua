-- claim.lua: make a node the owner of a device's route under a new, larger
-- connection epoch and return the previous owner so it can be kicked.
--
-- KEYS[1] route hash {n node, e epoch, c claim token, pn prev node, pe prev epoch}
-- ARGV    node, ttl ms, claim token (random per ClaimRoute call)
--
-- Returns {epoch, prev node ('' if none), prev epoch} as strings.
--
-- One script so two racing connects get distinct epochs and each sees the
-- other as its predecessor, never both the same one. The claim token makes a
-- retried call (go-redis retries after a read timeout) return the first
-- call's answer instead of bumping the epoch again and reporting itself as
-- the previous owner.
local r = redis.call('HMGET', KEYS[1], 'n', 'e', 'c', 'pn', 'pe')
if r[3] == ARGV[3] then
  return {r[2], r[4], r[5]}
end
local prevnode, prevepoch = r[1] or '', r[2] or '0'
-- max(previous + 1, now in microseconds): larger than every earlier epoch
-- even after the route key expired or was flushed, as long as the Redis
-- clock moves forward. Both stay below 2^53, so Lua's doubles are exact.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local epoch = string.format('%d', math.max(tonumber(prevepoch) + 1, now))
redis.call('HSET', KEYS[1], 'n', ARGV[1], 'e', epoch, 'c', ARGV[3], 'pn', prevnode, 'pe', prevepoch)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {epoch, prevnode, prevepoch}
