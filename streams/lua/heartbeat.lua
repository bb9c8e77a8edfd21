-- heartbeat.lua: store a node's heartbeat and report whether Redis kept the
-- node's earlier heartbeats, all on the Redis process now serving the key.
--
-- KEYS[1] heartbeat string: the NodeInfo JSON object with four fields this
--         script appends: token, after, redis_run_id, continued
-- ARGV    NodeInfo as a JSON object (ends in '}'), this call's token (hex),
--         the token of the last heartbeat whose result the caller received
--         ('' for none), ttl ms
--
-- Returns 1 (continued) or 0.
--
-- Continued means the key holds the heartbeat named by ARGV[3], or one that
-- a later call wrote while its result was lost (its after is ARGV[3] and it
-- found its own predecessor, so by induction the chain back to ARGV[3] is
-- unbroken), and that heartbeat was written by the process running this
-- script (same run_id: Redis was neither restarted nor failed over since).
-- It is always 0 when ARGV[3] is '' (the caller's first heartbeat).
-- A missing key (FLUSHALL, expiry, eviction, data lost in a crash), an older
-- heartbeat (a crash or failover that dropped the latest writes), another
-- process's heartbeat under the same node id, or a value without these
-- fields all give 0.
--
-- One script so the check and the write see one state. A call that go-redis
-- resends after a read timeout finds the value its first attempt wrote,
-- which has the same after: it answers as the first attempt did, unless
-- something was lost (or Redis restarted) in between.
local key, token, after, ttl = KEYS[1], ARGV[2], ARGV[3], ARGV[4]
local old = redis.pcall('GET', key)
local otoken, oafter, orun, ocont
if type(old) == 'string' then
  otoken, oafter, orun, ocont = string.match(old,
    ',"token":"(%x*)","after":"(%x*)","redis_run_id":"(%x*)","continued":(%a+)}$')
end

-- INFO may be refused (renamed away on some managed services): the check
-- then rests on the key's existence and tokens alone.
local run = ''
local info = redis.pcall('INFO', 'server')
if type(info) == 'string' then
  run = string.match(info, 'run_id:(%x+)') or ''
end

local cont = after ~= '' and otoken ~= nil and orun == run and
  (otoken == after or (oafter == after and ocont == 'true'))
redis.call('SET', key, string.sub(ARGV[1], 1, -2) ..
  string.format(',"token":"%s","after":"%s","redis_run_id":"%s","continued":%s}',
    token, after, run, cont and 'true' or 'false'),
  'PX', ttl)
return cont and 1 or 0
