-- movement.lua: one stock movement of one SKU (counter sale, receipt, wastage, return,
-- adjustment, count, or one half of a transfer).
-- op: {op="movement", key, hash, kind, sku, qty, event_id, event_at, note?, counterpart?}
--   kind is a ledger kind; qty is signed for adjustment and the counted on_hand for count.
-- returns one of
--   {r="ok", seq, result={seq, on_hand, reserved, available, shortfall?}, stock}
--   {r="replay", result}       this event key was applied before with the same body
--   {r="conflict", message}    this event key was applied before with another body
--   {r="out_of_stock", lines}  a transfer_out larger than what is available
--   {r="invalid", field, message}
-- invariant: every event key is applied at most once. Requests (transfer_out, a negative
-- adjustment) never take available below zero. Facts (counter sales, wastage, counts) are
-- recorded even when they do; the answer then carries the shortfall (-available).
local function movement(op)
  local prior = redis.call('HGET', K_EVENTS, op.key)
  if prior then
    prior = cjson.decode(prior)
    if prior.hash ~= op.hash then
      return {r = 'conflict', message = 'this event_id was used for another movement'}
    end
    return {r = 'replay', result = prior.result}
  end

  local c = counters(op.sku)
  local d
  if op.kind == 'count' then
    d = op.qty - c.on_hand
  elseif op.kind == 'sale_counter' or op.kind == 'wastage' or op.kind == 'transfer_out' then
    d = -op.qty
  else
    d = op.qty
  end
  if op.kind == 'transfer_out' and c.on_hand - c.reserved < op.qty then
    return {r = 'out_of_stock', lines = {{sku = op.sku, requested = op.qty,
      available = math.max(c.on_hand - c.reserved, 0)}}}
  end
  if op.kind == 'adjustment' and d < 0 and c.on_hand + d - c.reserved < 0 then
    return {r = 'invalid', field = 'qty', message = 'the adjustment would take available below zero (on_hand ' ..
      c.on_hand .. ', reserved ' .. c.reserved .. ')'}
  end

  local seq = next_seq()
  change(op.sku, d, 0, seq)
  local after = counters(op.sku)
  local available = after.on_hand - after.reserved
  local result = {seq = seq, on_hand = after.on_hand, reserved = after.reserved, available = available}
  if available < 0 then result.shortfall = -available end
  redis.call('HSET', K_EVENTS, op.key, cjson.encode({hash = op.hash, result = result}))
  redis.call('ZADD', K_FORGET, NOW + EVENT_RETAIN_MS, 'e:' .. op.key)
  append(seq, op.kind, {{sku = op.sku, d_on_hand = d, d_reserved = 0}}, {
    event_id = op.event_id, event_key = op.key, body_hash = op.hash, qty = op.qty,
    event_at_ms = op.event_at, note = op.note, counterpart = op.counterpart,
    on_hand_after = after.on_hand, reserved_after = after.reserved, shortfall = result.shortfall,
  })
  return {r = 'ok', seq = seq, result = result, stock = {after}}
end
