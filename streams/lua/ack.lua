-- ack.lua: apply cumulative acks and trim the acked entries.
--
-- KEYS    per device, in pairs: meta hash, inbox stream
-- ARGV    per device, in pairs: epoch, seq
--
-- Returns one value per device: 1 when applied, 0 when stale (seq <= acked),
-- beyond the last seq, or for another epoch.
--
-- One script so the check and the trim cannot interleave with an append's
-- cap trimming or another ack: the acked seq only moves forward. Several
-- devices share a call only on a standalone Redis, as in append.lua.
local out = {}
for k = 1, #KEYS, 2 do
  local meta, inbox = KEYS[k], KEYS[k + 1]
  local epoch, sseq = ARGV[k], ARGV[k + 1]
  local seq = tonumber(sseq)
  local m = redis.call('HMGET', meta, 'e', 'l', 'a')
  if m[1] == epoch and seq > tonumber(m[3]) and seq <= tonumber(m[2]) then
    redis.call('HSET', meta, 'a', sseq)
    redis.call('XTRIM', inbox, 'MINID', '0-' .. (seq + 1))
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
