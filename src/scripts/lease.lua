-- lease.lua: an outlet's ownership lease and its fencing token (see ownership.rs).
-- KEYS: 1 lease (string "{node} {epoch}", with an expiry)   2 epoch (the fencing token)
--       (both of one outlet, sharing its hash tag)
-- ARGV: 1 "acquire" | "takeover" | "renew" | "release"   2 node id
--       3 the caller's token (0 if none)
--       4 lease time (ms)
-- returns
--   acquire: the new epoch when the lease was free; else 0
--   takeover: the same, and also when the lease is held by an earlier run of the same node
--            (a process starting under the name of one that died); else 0
--   renew:   1 when the caller still holds the lease and the epoch is its own (expiry
--            pushed out); else 0
--   release: 1 when the caller held the lease (it is gone now); else 0
-- invariant: the epoch only grows, and each acquisition raises it, so every write made with
-- an older token is refused by the outlet's scripts.
local mode, node, token, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local current = redis.call('GET', KEYS[1])
local mine = node .. ' ' .. token
if mode == 'acquire' or mode == 'takeover' then
  if current and (mode == 'acquire' or string.sub(current, 1, #node + 1) ~= node .. ' ') then
    return 0
  end
  local epoch = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], node .. ' ' .. epoch, 'PX', ttl)
  return epoch
end
if current ~= mine then return 0 end
if mode == 'renew' then
  if redis.call('GET', KEYS[2]) ~= token then return 0 end
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 1
end
redis.call('DEL', KEYS[1])
return 1
