-- append.lua: store one message in each given device's inbox, deduplicated
-- by message id, and report each device's route.
--
-- KEYS    per device, in groups of four:
--         meta hash   {e epoch, l last seq, a acked seq, t trimmed seq,
--                      x lost seq, k keys' expiry in ms}
--         inbox stream (entry id 0-<seq>)
--         dedupe zset  (member message id, score seq)
--         route hash   {n node, e connection epoch}
-- ARGV    id, business, priority, created ms, expires ms, payload,
--         epoch for a new inbox, max unacked (this append's cap:
--         Message.MaxLen or InboxMaxLen), dedupe window, ttl ms, now ms
--
-- Returns five values per device, flat:
--         epoch, seq, duplicate 0|1, route node|nil, route epoch|nil.
--
-- One script because a device's seq counter, dedupe check, entry and cap
-- must change together: a retried call (go-redis resends after a read
-- timeout, callers retry with idempotency keys) must find the id and return
-- the original seq, never store a second copy or skip a seq. Several devices
-- share a call only on a standalone Redis (see DESIGN.md); on a cluster each
-- call holds one device, so every key of a call shares its {device} tag.
local id = ARGV[1]
local maxlen, window = tonumber(ARGV[8]), tonumber(ARGV[9])
local ttl, now = tonumber(ARGV[10]), tonumber(ARGV[11])
-- Keys get ttl plus a sixteenth, and are refreshed only once less than ttl
-- is left: most appends skip three PEXPIREs, and no message (expires <=
-- now + ttl) outlives its inbox.
local keyttl = ttl + math.floor(ttl / 16)
local out = {}
for k = 1, #KEYS, 4 do
  local meta, inbox, dedupe = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local m = redis.call('HMGET', meta, 'e', 'l', 'a', 't', 'x', 'k')
  local epoch = m[1]
  local last, acked, trimmed, lost, expiry = 0, 0, 0, 0, m[6] or '0'
  if epoch then
    last, acked, trimmed, lost = tonumber(m[2]), tonumber(m[3]), tonumber(m[4]), tonumber(m[5])
  else
    -- A new epoch: whatever is left under the other keys belongs to a lost
    -- one (they share the meta's expiry, so normally nothing is).
    epoch = ARGV[7]
    redis.call('DEL', inbox, dedupe)
  end

  local seq = last + 1
  -- Numbers go to Redis as strings formatted once: redis.call formats a
  -- Lua number with %.17g on every use, a measurable share of the script.
  local sseq = string.format('%d', seq)
  -- ZADD NX both checks and records the id: the common, new case costs one
  -- call, and only a duplicate pays a ZSCORE for its original seq.
  local dup = redis.call('ZADD', dedupe, 'NX', sseq, id) == 0
  if dup then
    seq = tonumber(redis.call('ZSCORE', dedupe, id))
    -- A write that changes nothing, so that the call is replicated: a
    -- WAIT after it then covers the original's writes too, which are
    -- earlier in the replication stream. Without it, a retry whose first
    -- attempt was never confirmed by a replica could be confirmed by a
    -- WAIT on a connection that wrote nothing (Redis 7.2 counts only a
    -- connection's own writes; 7.0 happens to count its reads).
    redis.call('HSET', meta, 'k', expiry)
  else
    local added = redis.pcall('XADD', inbox, '0-' .. sseq,
      'i', id, 'b', ARGV[2], 'p', ARGV[3], 'c', ARGV[4], 'x', ARGV[5], 'd', ARGV[6])
    if type(added) == 'table' and added.err then
      -- The stream is ahead of the meta's counter (or is not a stream):
      -- its keys were changed behind the store's back. Reusing seqs would
      -- hide messages, so start over in a new epoch; clients holding the
      -- old one get Recovered=false.
      epoch, seq, sseq = ARGV[7], 1, '1'
      acked, trimmed, lost = 0, 0, 0
      redis.call('DEL', inbox, dedupe)
      redis.call('ZADD', dedupe, sseq, id)
      redis.call('XADD', inbox, '0-1',
        'i', id, 'b', ARGV[2], 'p', ARGV[3], 'c', ARGV[4], 'x', ARGV[5], 'd', ARGV[6])
    end
    if seq > window then
      redis.call('ZREMRANGEBYSCORE', dedupe, '-inf', seq - window)
    end

    -- seq 1 means the inbox and dedupe keys were just created (by this
    -- append, after a Resume made the meta): they need their TTL now.
    local refresh = seq == 1 or tonumber(expiry) - now <= ttl
    if refresh then
      expiry = string.format('%d', now + keyttl)
    end
    -- Seqs are contiguous and the inbox holds exactly
    -- (max(acked, trimmed), seq], so the unacked count needs no XLEN. The
    -- cap is this call's: one lowered since the last append trims down to
    -- it now (raising the lost seq the same way), one raised trims nothing.
    if seq - math.max(acked, trimmed) > maxlen then
      trimmed = seq - maxlen
      redis.call('XTRIM', inbox, 'MINID', '0-' .. (trimmed + 1))
      if trimmed > lost then lost = trimmed end
      redis.call('HSET', meta, 'e', epoch, 'l', sseq, 'a', acked, 't', trimmed, 'x', lost, 'k', expiry)
    elseif seq == 1 then
      redis.call('HSET', meta, 'e', epoch, 'l', sseq, 'a', acked, 't', trimmed, 'x', lost, 'k', expiry)
    else
      redis.call('HSET', meta, 'l', sseq, 'k', expiry)
    end
    if refresh then
      redis.call('PEXPIRE', meta, keyttl)
      redis.call('PEXPIRE', inbox, keyttl)
      redis.call('PEXPIRE', dedupe, keyttl)
    end
  end

  local r = redis.call('HMGET', KEYS[k + 3], 'n', 'e')
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5] = epoch, seq, dup and 1 or 0, r[1], r[2]
end
return out
