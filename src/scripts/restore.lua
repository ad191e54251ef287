-- restore.lua: writes an outlet rebuilt from the ledger back into Redis.
-- KEYS: the ten keys of one outlet, then its epoch and its lease (see apply_batch.lua).
-- ARGV: 1 JSON {seq, counters=[[sku, on_hand, reserved, sku_seq]...], reservations=[[id, json]...],
--               idem=[[key, json]...], events=[[key, json]...], forget=[[score, member]...],
--               lots=[[sku, lots json]...]}
--       2 "0" only when the outlet has no state; "1" replace whatever is there (Redis came
--         back behind the ledger); "2" replace unless Redis is ahead of the plan's seq (an
--         operator's rebuild: what Redis has beyond the ledger is not lost)
--       3 the caller's fencing token (its lease's epoch)   4 the caller's node id
-- returns 1 when restored, 0 when the existing state was left untouched, -1 when the outlet's
-- epoch or lease is not the caller's (as in apply_batch.lua): nothing written.
-- invariant: a restore overwrites live state only when told to; the seq key is written last, so a
-- restore cut short leaves the outlet still "missing" and is simply done again.
if tonumber(redis.call('GET', KEYS[11]) or '0') ~= tonumber(ARGV[3])
    or redis.call('GET', KEYS[12]) ~= ARGV[4] .. ' ' .. ARGV[3] then
  return -1
end
local current = redis.call('GET', KEYS[4])
if current then
  if ARGV[2] == '0' then return 0 end
  local plan_seq = cjson.decode(ARGV[1]).seq
  if ARGV[2] == '2' and tonumber(current) > plan_seq then return 0 end
end
for i = 1, 10 do
  redis.call('DEL', KEYS[i])
end
local p = cjson.decode(ARGV[1])
for _, c in ipairs(p.counters) do
  redis.call('HSET', KEYS[1], c[1], c[2])
  redis.call('HSET', KEYS[2], c[1], c[3])
  redis.call('HSET', KEYS[3], c[1], c[4])
end
for _, r in ipairs(p.reservations) do redis.call('HSET', KEYS[5], r[1], r[2]) end
for _, r in ipairs(p.idem) do redis.call('HSET', KEYS[6], r[1], r[2]) end
for _, r in ipairs(p.events) do redis.call('HSET', KEYS[7], r[1], r[2]) end
for _, f in ipairs(p.forget) do redis.call('ZADD', KEYS[9], f[1], f[2]) end
for _, l in ipairs(p.lots) do redis.call('HSET', KEYS[10], l[1], l[2]) end
redis.call('SET', KEYS[4], p.seq)
return 1
