-- apply_batch.lua: applies a batch of one outlet's operations in arrival order, atomically,
-- in one round trip (the outlet actor's group commit).
-- KEYS: 1 on_hand  2 reserved  3 sku_seq  4 seq  5 res  6 idem  7 events  8 outbox  9 forget
--       10 lots  11 epoch  12 lease (all of one outlet, sharing its hash tag; see keys.rs)
-- ARGV: 1 outlet id   2 now (ms)   3 ops (JSON array)   4 the seq the actor last saw
--       5 reservation retention (ms)   6 event retention (ms)   7 outbox bound (entries)
--       8 most forgotten records per call   9 the caller's fencing token (its lease's epoch)
--       10 the caller's node id   11 the Pub/Sub channel of commits
-- returns JSON, one of
--   {"results":[...]}      one result per op, in order (see each operation's file)
--   {"fenced":true}        the outlet's epoch is not the caller's token, or its lease is not
--                          the caller's (expired, or taken by another process): nothing applied
--   {"lost":true}          the outlet's state is gone (Redis restarted empty): nothing applied
--   {"backlog":true}       the outbox is at its bound (the ledger is behind): nothing applied
-- publishes, when the batch changed the outlet, one message to ARGV[11] inside the same atomic
--   step: {"outlet", "from": seq before, "to": seq after, "stock": [the latest counters of
--   every SKU the batch changed], "orders": [reservations the batch confirmed]}; the other
--   processes follow the outlet from it (follower.rs) and resync on a gap in from/to.
-- invariant: the outlet's seq never goes backwards and never skips; nothing is applied to an
-- outlet whose state is missing, nor by a process whose lease was taken over (fencing).

if tonumber(redis.call('GET', KEYS[11]) or '0') ~= tonumber(ARGV[9])
    or redis.call('GET', KEYS[12]) ~= ARGV[10] .. ' ' .. ARGV[9] then
  return cjson.encode({fenced = true})
end
local seen_seq = tonumber(ARGV[4])
local seq_now = tonumber(redis.call('GET', K_SEQ) or '0')
if seq_now < seen_seq then
  return cjson.encode({lost = true})
end
if redis.call('XLEN', K_OUTBOX) >= tonumber(ARGV[7]) then
  return cjson.encode({backlog = true})
end

-- Forget finished reservations, old Idempotency-Keys and old event keys, a bounded number
-- per call, so that memory stays bounded without a sweeper of its own.
local due = redis.call('ZRANGEBYSCORE', K_FORGET, '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[8]))
for _, member in ipairs(due) do
  local tag, key = string.sub(member, 1, 1), string.sub(member, 3)
  if tag == 'r' then
    redis.call('HDEL', K_RES, key)
  elseif tag == 'i' then
    redis.call('HDEL', K_IDEM, key)
  else
    redis.call('HDEL', K_EVENTS, key)
  end
end
if #due > 0 then redis.call('ZREM', K_FORGET, unpack(due)) end

local handlers = {
  reserve = reserve, confirm = confirm, release = release, movement = movement,
  expire_lot = expire_lot, audit = audit, heal = heal,
}
local ops, results = cjson.decode(ARGV[3]), {}
for i, op in ipairs(ops) do
  -- Every operation names who made it, but the reconciler's own (audit, heal).
  BY = op.by or 'reconciler'
  results[i] = handlers[op.op](op)
end

local seq_after = tonumber(redis.call('GET', K_SEQ) or '0')
if seq_after > seq_now then
  local latest, stock, orders = {}, {}, {}
  for i, result in ipairs(results) do
    for _, row in ipairs(result.stock or {}) do
      if latest[row.sku] == nil then
        stock[#stock + 1] = row.sku
      end
      latest[row.sku] = row
    end
    if result.r == 'ok' and ops[i].op == 'confirm' and result.res then
      orders[#orders + 1] = result.res
    end
  end
  for i, sku in ipairs(stock) do stock[i] = latest[sku] end
  -- cjson encodes an empty table as {}: empty lists are spelled out.
  local function list(t) if #t == 0 then return '[]' end return cjson.encode(t) end
  redis.call('PUBLISH', ARGV[11], '{"outlet":' .. cjson.encode(OUTLET) .. ',"from":' .. seq_now ..
    ',"to":' .. seq_after .. ',"stock":' .. list(stock) .. ',"orders":' .. list(orders) .. '}')
end
return cjson.encode({results = results})
