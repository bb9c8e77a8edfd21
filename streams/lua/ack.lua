-- ack.lua: apply one cumulative ack and trim the acked entries.
--
-- KEYS[1] meta hash, KEYS[2] inbox stream
-- ARGV    epoch, seq
--
-- Returns 1 when applied, 0 when stale (seq <= acked), beyond the last seq,
-- or for another epoch.
--
-- One script so the check and the trim cannot interleave with an append's
-- cap trimming or another ack: the acked seq only moves forward.
local m = redis.call('HMGET', KEYS[1], 'e', 'l', 'a')
if m[1] ~= ARGV[1] then return 0 end
local seq = tonumber(ARGV[2])
if seq <= tonumber(m[3]) or seq > tonumber(m[2]) then return 0 end
redis.call('HSET', KEYS[1], 'a', seq)
redis.call('XTRIM', KEYS[2], 'MINID', '0-' .. (seq + 1))
return 1
