#!lua flags=no-writes
-- read.lua: read one device's entries after a seq, skipping expired ones.
--
-- KEYS[1] meta hash, KEYS[2] inbox stream
-- ARGV    expected epoch, after seq, limit, now ms
--
-- Returns {epoch|nil, changed 0|1, last, {{id, fields}, ...}}.
--
-- A script so the epoch check and the reads see one state, and so expired
-- entries do not count against the limit. It only reads (no-writes), so it
-- may run on a replica; the gap bookkeeping is Resume's job.
local m = redis.call('HMGET', KEYS[1], 'e', 'l', 'a')
local epoch = m[1]
if not epoch then
  return {false, ARGV[1] ~= '' and 1 or 0, 0, {}}
end
local last, acked = tonumber(m[2]), tonumber(m[3])
local after, limit, now = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local changed = 0
if epoch ~= ARGV[1] or after > last then
  -- After > last: the counter went back (Redis lost writes), so the caller's
  -- seqs no longer name these entries. Either way start after the acks.
  changed, after = 1, 0
end

local out, n, start = {}, 0, math.max(after, acked) + 1
while n < limit do
  local want = limit - n
  local rows = redis.call('XRANGE', KEYS[2], '0-' .. start, '+', 'COUNT', want)
  for _, row in ipairs(rows) do
    start = tonumber(string.sub(row[1], 3)) + 1
    if tonumber(row[2][10]) > now then
      n = n + 1
      out[n] = row
    end
  end
  if #rows < want then break end
end
return {epoch, changed, last, out}
