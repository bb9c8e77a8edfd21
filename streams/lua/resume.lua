-- resume.lua: answer a connecting device's resume cursor with the proof of
-- continuity and the first unacked entries after it.
--
-- KEYS[1] meta hash, KEYS[2] inbox stream, KEYS[3] dedupe zset,
--         KEYS[4] (optional) the device's group set
-- ARGV    cursor epoch ('' for a fresh client), cursor seq, limit, now ms,
--         epoch for a new inbox, key ttl ms, user: '' leaves the meta's
--         user alone, '=' followed by the session's user ('=' alone: none)
--         records it
--
-- Returns {epoch, recovered 0|1, acked, last, {{id, fields}, ...}, lost,
-- previous user, {groups}}: lost says why recovered is 0 (the first cause
-- found), '' when it is 1; previous user is the meta's user before this
-- call ('' when none or not recorded); groups the members of KEYS[4].
--
-- One script because the verdict and the lost seq it raises must be decided
-- on the same state the entries are read from: an append or an ack between
-- the reads would make "continuity proven" a claim about a different inbox.
local meta, inbox, dedupe = KEYS[1], KEYS[2], KEYS[3]
local pepoch, pseq = ARGV[1], tonumber(ARGV[2])
local limit, now, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6])
local setuser = ARGV[7] ~= ''
local user = string.sub(ARGV[7], 2)
if pepoch == '' then pseq = 0 end
local groups = {}
if #KEYS >= 4 then groups = redis.call('SMEMBERS', KEYS[4]) end
-- The same key lifetime append.lua gives: ttl plus a sixteenth.
local keyttl = ttl + math.floor(ttl / 16)

local m = redis.call('HMGET', meta, 'e', 'l', 'a', 'x', 'u')
local epoch = m[1]
local prevuser = m[5] or ''
-- The device's user, so a push to a user it no longer belongs to skips it.
if setuser and prevuser ~= user then redis.call('HSET', meta, 'u', user) end
if not epoch then
  -- No inbox (never written, expired, flushed or lost): start an epoch so
  -- the client holds a cursor that later answers can be checked against.
  epoch = ARGV[5]
  redis.call('DEL', inbox, dedupe)
  redis.call('HSET', meta, 'e', epoch, 'l', 0, 'a', 0, 't', 0, 'x', 0, 'k', now + keyttl)
  redis.call('PEXPIRE', meta, keyttl)
  if pepoch == '' then
    return {epoch, 1, 0, 0, {}, '', prevuser, groups}
  end
  return {epoch, 0, 0, 0, {}, 'inbox_missing', prevuser, groups}
end
local last, acked, lost = tonumber(m[2]), tonumber(m[3]), tonumber(m[4])

local recovered, why = true, ''
if pepoch ~= '' and pepoch ~= epoch then
  -- A cursor from another epoch says nothing about this one.
  recovered, why, pseq = false, 'other_epoch', 0
elseif pseq > last then
  -- The client saw seqs this inbox never assigned: Redis lost acknowledged
  -- writes (a crash under appendfsync everysec) and the counter went back,
  -- or the client kept a cursor it never received. Those seqs will be
  -- reused for other messages, so the epoch must change.
  recovered, why, pseq = false, 'cursor_ahead', 0
  epoch = ARGV[5]
  redis.call('HSET', meta, 'e', epoch)
elseif lost > pseq then
  -- Entries after the cursor were trimmed by the cap or found missing.
  recovered, why = false, 'entries_lost'
end

-- Walk the inbox from the cursor. Seqs are contiguous, so any seq that is
-- neither acked nor present is a gap, whatever removed it.
local cursor = math.max(pseq, acked)
local out, n, expect, newlost = {}, 0, cursor + 1, lost
while n < limit do
  local want = limit - n
  local rows = redis.call('XRANGE', inbox, '0-' .. expect, '+', 'COUNT', want)
  for _, row in ipairs(rows) do
    local seq = tonumber(string.sub(row[1], 3))
    if seq ~= expect then
      recovered = false
      if why == '' then why = 'entries_lost' end
      if seq - 1 > newlost then newlost = seq - 1 end
    end
    expect = seq + 1
    -- fields: i id b business p priority c created x expires d payload
    if tonumber(row[2][10]) <= now then
      recovered = false
      if why == '' then why = 'entries_lost' end
      if seq > newlost then newlost = seq end
    else
      n = n + 1
      out[n] = row
      if n == limit then break end
    end
  end
  if n == limit then break end
  if #rows < want then
    -- End of the inbox: every seq up to last must have been seen.
    if expect <= last then
      recovered = false
      if why == '' then why = 'entries_lost' end
      if last > newlost then newlost = last end
    end
    break
  end
end
-- A device that keeps connecting keeps its epoch even without new messages.
if newlost > lost then
  redis.call('HSET', meta, 'x', newlost, 'k', now + keyttl)
else
  redis.call('HSET', meta, 'k', now + keyttl)
end
redis.call('PEXPIRE', meta, keyttl)
redis.call('PEXPIRE', inbox, keyttl)
redis.call('PEXPIRE', dedupe, keyttl)
return {epoch, recovered and 1 or 0, acked, last, out, why, prevuser, groups}
