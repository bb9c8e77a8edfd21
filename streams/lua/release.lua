-- release.lua: clear a device's route only if it still names this owner.
--
-- KEYS[1] route hash
-- ARGV    node, epoch
--
-- Returns 1 when released, 0 when the route names someone else or nobody
-- (already released, expired, lost). ReleaseRoutes sends one call per device,
-- all in one pipeline.
--
-- Compare-and-delete in one script, so a node that lost the route can never
-- clear the new owner's. Only the node field goes: the epoch stays so the
-- next claim still gets a larger one.
local r = redis.call('HMGET', KEYS[1], 'n', 'e')
if r[1] == ARGV[1] and r[2] == ARGV[2] then
  redis.call('HDEL', KEYS[1], 'n')
  return 1
end
return 0
