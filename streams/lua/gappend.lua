-- gappend.lua: append one message to a group's catch-up stream, if the
-- group keeps one.
--
-- KEYS[1] the group's stream meta hash (see gstream.lua)
-- KEYS[2] the group's stream (entry id 0-<seq>)
-- ARGV    id, business, priority, created ms, payload, filter, now ms,
--         epoch for a stream started anew
--
-- Returns {epoch, seq}; {'', 0} when the group keeps no stream.
--
-- One script so a message is appended once per group push whatever the
-- members, its seq is the next one, and the stream stays within its
-- bounds: entries past the most kept and those older than the max age
-- are trimmed here (at most 64 by age per append), and the stream key
-- expires once its newest entry is that old. A call resent after a read
-- timeout finds its id and returns the first attempt's seq.
local meta, stream, id, now = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[7])
local m = redis.call('HMGET', meta, 'n', 'a', 'e', 'l', 't', 'm', 'ms')
local most = tonumber(m[1] or '0')
if most <= 0 or not m[3] then return {'', 0} end
local age, epoch, last, trimmed = tonumber(m[2]), m[3], tonumber(m[4]), tonumber(m[5])
if m[6] == id then return {epoch, tonumber(m[7])} end
local seq = last + 1
local fields = {'i', id, 'b', ARGV[2], 'p', ARGV[3], 'c', ARGV[4], 'd', ARGV[5], 'f', ARGV[6]}
if not pcall(redis.call, 'XADD', stream, '0-' .. seq, unpack(fields)) then
  -- The stream is ahead of the meta's counter (keys restored or edited by
  -- hand): start a new epoch rather than reuse seqs.
  epoch, seq, trimmed = ARGV[8], 1, 0
  redis.call('DEL', stream)
  redis.call('XADD', stream, '0-1', unpack(fields))
end
if seq - trimmed > most then trimmed = seq - most end
for _, row in ipairs(redis.call('XRANGE', stream, '0-' .. (trimmed + 1), '+', 'COUNT', 64)) do
  -- fields: i id b business p priority c created ...: created is the 8th
  if tonumber(row[2][8]) >= now - age then break end
  trimmed = tonumber(string.sub(row[1], 3))
end
redis.call('XTRIM', stream, 'MINID', '0-' .. (trimmed + 1))
redis.call('HSET', meta, 'e', epoch, 'l', seq, 't', trimmed, 'm', id, 'ms', seq)
redis.call('PEXPIRE', stream, age)
return {epoch, seq}
