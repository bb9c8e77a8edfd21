-- gread.lua: answer a member's cursor in a group's catch-up stream with
-- the proof of continuity and the entries after it.
--
-- KEYS[1] the group's stream meta hash (see gstream.lua)
-- KEYS[2] the group's stream (entry id 0-<seq>)
-- ARGV    cursor epoch ('' for a member without one), cursor seq, limit,
--         now ms
--
-- Returns {0} when the group keeps no stream, else {1, epoch, last,
-- recovered 0|1, {{id, fields}, ...}, upto, more 0|1}: the unexpired
-- entries after the cursor (at most limit), upto the seq they cover, and
-- more when the stream holds entries after upto (read on from {epoch,
-- upto}).
--
-- One script so the verdict is decided on the state the entries are read
-- from, as resume.lua does for inboxes.
local meta, stream = KEYS[1], KEYS[2]
local pepoch, pseq, limit, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local m = redis.call('HMGET', meta, 'n', 'a', 'e', 'l', 't')
if tonumber(m[1] or '0') <= 0 or not m[3] then return {0} end
local age, epoch, last, trimmed = tonumber(m[2]), m[3], tonumber(m[4]), tonumber(m[5])
if pepoch == '' then
  -- No cursor: nothing to catch up with, only where to start.
  return {1, epoch, last, 1, {}, last, 0}
end
local recovered, after = 1, pseq
if pepoch ~= epoch or pseq > last or pseq < trimmed then
  -- Another epoch, a cursor past the counter (Redis lost writes), or
  -- entries after the cursor trimmed: replay what is held, unproven.
  recovered, after = 0, trimmed
end
local rows = redis.call('XRANGE', stream, '0-' .. (after + 1), '+', 'COUNT', limit)
local out, expect = {}, after + 1
for _, row in ipairs(rows) do
  local seq = tonumber(string.sub(row[1], 3))
  if seq ~= expect then recovered = 0 end
  expect = seq + 1
  if tonumber(row[2][8]) < now - age then
    recovered = 0
  else
    out[#out + 1] = row
  end
end
local upto, more = expect - 1, 0
if #rows < limit then
  -- The end of the stream: every seq up to last must have been there.
  if expect <= last then recovered = 0 end
  upto = math.max(upto, last)
elseif upto < last then
  more = 1
end
return {1, epoch, last, recovered, out, upto, more}
