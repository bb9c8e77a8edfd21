-- members.lua: add members to, or remove them from, a group's member set.
--
-- KEYS[1] the group's member set
-- ARGV    op ('+' add, '-' remove), most members, member...
--
-- Returns, per member: 1 changed, 0 already so, -1 not added (the group
-- holds the most members).
--
-- One script so the bound holds under concurrent adds: the size is read
-- and the members added in one step.
local set, most = KEYS[1], tonumber(ARGV[2])
local out = {}
if ARGV[1] == '+' then
  local size = redis.call('SCARD', set)
  for i = 3, #ARGV do
    if redis.call('SISMEMBER', set, ARGV[i]) == 1 then
      out[#out + 1] = 0
    elseif size >= most then
      out[#out + 1] = -1
    else
      redis.call('SADD', set, ARGV[i])
      size = size + 1
      out[#out + 1] = 1
    end
  end
else
  for i = 3, #ARGV do
    out[#out + 1] = redis.call('SREM', set, ARGV[i])
  end
end
return out
