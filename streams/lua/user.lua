-- user.lua: record that a device of a user connected, and read the user's
-- groups.
--
-- KEYS[1] the user's devices zset (member device, score last handshake ms)
-- KEYS[2] the user's group set
-- ARGV    device, now ms, ttl ms, most devices kept
--
-- Returns the user's groups.
--
-- One script so the index stays within its bounds at every write: devices
-- not seen for ttl are dropped, the least recently seen go past the most
-- kept, and the key lives ttl after the last handshake.
local devices, now, ttl, most = KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZADD', devices, now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', devices, '-inf', '(' .. (now - ttl))
local n = redis.call('ZCARD', devices)
if n > most then redis.call('ZPOPMIN', devices, n - most) end
redis.call('PEXPIRE', devices, ttl)
return redis.call('SMEMBERS', KEYS[2])
