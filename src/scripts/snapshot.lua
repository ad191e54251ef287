-- snapshot.lua: reads one outlet's live state atomically (start-up, reload, reconciler).
-- KEYS: the ten keys of one outlet (see apply_batch.lua).
-- ARGV: none.
-- returns false when the outlet has no state in Redis, else an array
--   {seq, on_hand JSON {sku: n}, reserved JSON, sku_seq JSON, {held reservation JSON...},
--    lots JSON {sku: [lot...]}}
-- invariant: read-only; every number belongs to the same seq.
if redis.call('EXISTS', KEYS[4]) == 0 then return false end

local function numbers(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return '{}' end
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = tonumber(flat[i + 1]) end
  return cjson.encode(t)
end

local held, n = {}, 0
local all = redis.call('HGETALL', KEYS[5])
for i = 2, #all, 2 do
  -- Most records are finished ones kept for their retention: a plain search passes over them
  -- without decoding (a quote inside a JSON string is escaped, so no value can fake it).
  -- Every writer encodes compactly (cjson here, serde_json in a restore; a test in ledger.rs
  -- holds the latter to it): a writer that adds spaces would hide live holds from this.
  if string.find(all[i], '"status":"held"', 1, true) and cjson.decode(all[i]).status == 'held' then
    n = n + 1
    held[n] = all[i]
  end
end
local lots, any = {}, false
local flat = redis.call('HGETALL', KEYS[10])
for i = 1, #flat, 2 do
  lots[flat[i]] = cjson.decode(flat[i + 1])
  any = true
end
local lots_json = '{}'
if any then lots_json = cjson.encode(lots) end
return {redis.call('GET', KEYS[4]), numbers(KEYS[1]), numbers(KEYS[2]), numbers(KEYS[3]), held,
  lots_json}
