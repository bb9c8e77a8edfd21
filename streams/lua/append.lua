-- append.lua: store one message in one device's inbox, deduplicated by
-- message id, and report the device's route.
--
-- KEYS[1] meta hash   {e epoch, l last seq, a acked seq, t trimmed seq, x lost seq}
-- KEYS[2] inbox stream (entry id 0-<seq>)
-- KEYS[3] dedupe zset  (member message id, score seq)
-- KEYS[4] route hash   {n node, e connection epoch}
-- ARGV    id, business, priority, created ms, expires ms, payload,
--         epoch for a new inbox, max unacked, dedupe window, key ttl ms
--
-- Returns {epoch, seq, duplicate 0|1, route node|nil, route epoch|nil}.
--
-- One script because the seq counter, the dedupe check, the entry and the
-- cap must change together: a retried call (go-redis retries after a read
-- timeout, callers retry with idempotency keys) must find the id and return
-- the original seq, never store a second copy or skip a seq.
local meta, inbox, dedupe = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[1]
local m = redis.call('HMGET', meta, 'e', 'l', 'a', 't', 'x')
local epoch = m[1]
local last, acked, trimmed, lost = 0, 0, 0, 0
if epoch then
  local dup = redis.call('ZSCORE', dedupe, id)
  if dup then
    local r = redis.call('HMGET', KEYS[4], 'n', 'e')
    return {epoch, tonumber(dup), 1, r[1], r[2]}
  end
  last, acked, trimmed, lost = tonumber(m[2]), tonumber(m[3]), tonumber(m[4]), tonumber(m[5])
else
  -- A new epoch: whatever is left under the other keys belongs to a lost
  -- one (they share the meta's expiry, so normally nothing is).
  epoch = ARGV[7]
  redis.call('DEL', inbox, dedupe)
end

local seq = last + 1
redis.call('XADD', inbox, '0-' .. seq,
  'i', id, 'b', ARGV[2], 'p', ARGV[3], 'c', ARGV[4], 'x', ARGV[5], 'd', ARGV[6])

-- Seqs are contiguous and the inbox holds exactly (max(acked, trimmed), seq],
-- so the unacked count needs no XLEN.
local maxlen = tonumber(ARGV[8])
if seq - math.max(acked, trimmed) > maxlen then
  trimmed = seq - maxlen
  redis.call('XTRIM', inbox, 'MINID', '0-' .. (trimmed + 1))
  if trimmed > lost then lost = trimmed end
  redis.call('HSET', meta, 'e', epoch, 'l', seq, 'a', acked, 't', trimmed, 'x', lost)
elseif seq == 1 then
  redis.call('HSET', meta, 'e', epoch, 'l', seq, 'a', acked, 't', trimmed, 'x', lost)
else
  redis.call('HSET', meta, 'l', seq)
end

redis.call('ZADD', dedupe, seq, id)
local window = tonumber(ARGV[9])
if seq > window then
  redis.call('ZREMRANGEBYSCORE', dedupe, '-inf', seq - window)
end

local ttl = ARGV[10]
redis.call('PEXPIRE', meta, ttl)
redis.call('PEXPIRE', inbox, ttl)
redis.call('PEXPIRE', dedupe, ttl)

local r = redis.call('HMGET', KEYS[4], 'n', 'e')
return {epoch, seq, 0, r[1], r[2]}
