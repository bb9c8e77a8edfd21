-- refresh.lua: extend a device's route TTL only if it still names this owner.
--
-- KEYS[1] route hash
-- ARGV    node, epoch, ttl ms
--
-- Returns 1 when refreshed, 0 when the route names someone else or nobody
-- (released, expired, lost with Redis data): RefreshRoutes reports it, so the
-- node learns that its connection no longer owns the route.
--
-- Compare-and-PEXPIRE in one script, so a zombie owner cannot keep alive a
-- route that now belongs to another connection.
local r = redis.call('HMGET', KEYS[1], 'n', 'e')
if r[1] == ARGV[1] and r[2] == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
