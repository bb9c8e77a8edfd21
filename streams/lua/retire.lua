-- retire.lua: delete a dead node's delivery stream once nothing is left in it.
--
-- KEYS[1] the node's delivery stream, KEYS[2] the node's heartbeat key
--
-- Returns 1 when retired (or nothing to delete), -1 if the node is alive,
-- -2 if entries are still pending or unread.
--
-- One script so no entry can be delivered or appended between the check and
-- the delete.
local stream = KEYS[1]
if redis.call('EXISTS', KEYS[2]) == 1 then
  return -1
end
if redis.call('EXISTS', stream) == 0 then
  return 1
end
local groups = redis.call('XINFO', 'GROUPS', stream)
if #groups == 0 and redis.call('XLEN', stream) > 0 then
  return -2
end
for _, g in ipairs(groups) do
  local f = {}
  for i = 1, #g, 2 do
    f[g[i]] = g[i + 1]
  end
  if tonumber(f['pending']) > 0 then
    return -2
  end
  local unread = redis.call('XRANGE', stream, '(' .. f['last-delivered-id'], '+', 'COUNT', 1)
  if #unread > 0 then
    return -2
  end
end
redis.call('DEL', stream)
return 1
