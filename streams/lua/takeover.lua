-- takeover.lua: hand a dead node's undelivered entries to a live consumer.
--
-- KEYS[1] the dead node's delivery stream
-- ARGV    group, consumer, count, min idle ms
--
-- Returns up to count entries {{id, {field, value}}, ...}: first pending
-- entries idle at least min idle (claimed by XAUTOCLAIM), then entries never
-- delivered to anyone (XREADGROUP >).
--
-- A script so one round trip returns at most count entries in all, and the
-- claim and the read cannot hand the same entry out twice.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local count = tonumber(ARGV[3])
if redis.call('EXISTS', stream) == 0 then
  return {}
end
-- A node that died before creating its group still has entries to hand out.
redis.pcall('XGROUP', 'CREATE', stream, group, '0')

local out = {}
local start = '0-0'
-- Each XAUTOCLAIM scans at most 10 * COUNT pending entries; a few rounds go
-- past a run of young ones, and the next call starts over anyway.
for _ = 1, 8 do
  local r = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[4], start, 'COUNT', count - #out)
  for _, e in ipairs(r[2]) do
    out[#out + 1] = e
  end
  start = r[1]
  if start == '0-0' or #out >= count then break end
end
if #out < count then
  local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count - #out, 'STREAMS', stream, '>')
  if r then
    for _, e in ipairs(r[1][2]) do
      out[#out + 1] = e
    end
  end
end
return out
