-- gstream.lua: turn a group's catch-up stream on (or change its bounds)
-- or off.
--
-- KEYS[1] the group's stream meta hash {n most entries, a max age ms,
--         e epoch, l last seq, t seq trimmed up to, m/ms last message id
--         and its seq}
-- KEYS[2] the group's stream (entry id 0-<seq>)
-- ARGV    most entries (0: off), max age ms, epoch for a new stream
--
-- Returns {epoch, last seq, trimmed seq}; {'', 0, 0} when turned off.
--
-- One script so a stream's bounds and its entries change together: a
-- lowered bound trims at once, and turning the stream off forgets its
-- epoch, so a cursor of it reads as not recovered if it comes back.
local meta, stream, most, age = KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2])
if most <= 0 then
  redis.call('DEL', meta, stream)
  return {'', 0, 0}
end
local m = redis.call('HMGET', meta, 'e', 'l', 't')
local epoch, last, trimmed = m[1], tonumber(m[2] or '0'), tonumber(m[3] or '0')
if not epoch then
  epoch, last, trimmed = ARGV[3], 0, 0
  redis.call('DEL', stream)
end
if last - trimmed > most then
  trimmed = last - most
  redis.call('XTRIM', stream, 'MINID', '0-' .. (trimmed + 1))
end
redis.call('HSET', meta, 'n', most, 'a', age, 'e', epoch, 'l', last, 't', trimmed)
return {epoch, last, trimmed}
