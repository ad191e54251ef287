-- movement.lua: one stock movement of one SKU (counter sale, receipt, wastage, return,
-- adjustment, count, or one half of a transfer).
-- op: {op="movement", key, hash, kind, sku, qty, event_id, event_at, note?, counterpart?,
--      lot?, lots?}
--   kind is a ledger kind; qty is signed for adjustment and the counted on_hand for count.
--   Units coming in go into the lots of `lots` ({lot, made_at, expires_at, qty}, at most qty
--   in all; a lot already here must have the same times), the rest are loose. Units going out
--   come from lot `lot` when it is named, else from the lots good now, earliest expiry first,
--   then from the loose units. A count below on_hand takes the difference as units going out.
-- returns one of
--   {r="ok", seq, result={seq, on_hand, reserved, available, shortfall?}, stock}
--   {r="replay", result}       this event key was applied before with the same body
--   {r="conflict", message}    this event key was applied before with another body
--   {r="out_of_stock", lines}  a transfer_out larger than what is available
--   {r="invalid", field, message}
-- The result carries `lots`, the lot deltas of the change, when it moved any lot (a transfer's
-- receiving half gets its sending half's lots from it).
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

  local lots, moved = lots_of(op.sku), {}
  if d < 0 and op.lot then
    local l = find_lot(lots, op.lot)
    local free = 0
    if l then free = l.qty - l.held end
    if free < -d then
      if op.kind == 'transfer_out' then
        return {r = 'out_of_stock', lines = {{sku = op.sku, requested = -d, available = math.max(free, 0)}}}
      end
      return {r = 'invalid', field = 'lot', message = 'lot ' .. op.lot .. ' of ' .. op.sku ..
        ' has ' .. math.max(free, 0) .. ' units not held'}
    end
    l.qty = l.qty + d
    moved[1] = lot_delta(l, d, 0)
  elseif d < 0 then
    moved = take_lots(lots, -d, NOW, false)
  elseif d > 0 then
    local left = d
    for _, given in ipairs(op.lots or {}) do
      local id = given.lot
      local l = find_lot(lots, id)
      local clash = l and (l.expires_at ~= given.expires_at or l.made_at ~= given.made_at)
      if clash and op.kind == 'transfer_in' then
        -- Units on their way are never refused: a lot of the same name made at other times
        -- here keeps its name, the arriving one is told apart by where it came from.
        id = id .. '@' .. op.counterpart
        l = find_lot(lots, id)
        clash = l and (l.expires_at ~= given.expires_at or l.made_at ~= given.made_at)
      end
      if clash then
        return {r = 'invalid', field = 'lot', message = 'lot ' .. id .. ' of ' .. op.sku ..
          ' is here with other made_at and expires_at times'}
      end
      if not l then
        l = {lot = id, made_at = given.made_at, expires_at = given.expires_at, qty = 0, held = 0}
        lots[#lots + 1] = l
      end
      local k = math.min(given.qty, left)
      l.qty = l.qty + k
      left = left - k
      moved[#moved + 1] = lot_delta(l, k, 0)
    end
  end

  local seq = next_seq()
  change(op.sku, d, 0, seq)
  save_lots(op.sku, lots)
  local after = counters(op.sku)
  local available = after.on_hand - after.reserved
  local result = {seq = seq, on_hand = after.on_hand, reserved = after.reserved, available = available}
  if available < 0 then result.shortfall = -available end
  local line = {sku = op.sku, d_on_hand = d, d_reserved = 0}
  if #moved > 0 then
    result.lots = moved
    line.lots = moved
  end
  redis.call('HSET', K_EVENTS, op.key, cjson.encode({hash = op.hash, result = result}))
  redis.call('ZADD', K_FORGET, NOW + EVENT_RETAIN_MS, 'e:' .. op.key)
  append(seq, op.kind, {line}, {
    event_id = op.event_id, event_key = op.key, body_hash = op.hash, qty = op.qty,
    event_at_ms = op.event_at, note = op.note, counterpart = op.counterpart,
    on_hand_after = after.on_hand, reserved_after = after.reserved, shortfall = result.shortfall,
  })
  return {r = 'ok', seq = seq, result = result, stock = {after}}
end

-- expire_lot: writes off what is left of a lot at its expiry (the `expiry` ledger document).
-- op: {op="expire_lot", sku, lot}
-- returns {r="ok", seq, result (as a movement's, with the lot's delta), stock}, or
--   {r="skipped", reason} when the lot is gone ("gone"), not due
--   yet ("not_due"), or has held units ("held": a hold never takes a lot that expires before
--   the hold does, so its hold is due for release too, and the expiry comes again after it).
-- invariant: a lot's expiry is written once: the lot is gone after it.
local function expire_lot(op)
  local lots = lots_of(op.sku)
  local l = find_lot(lots, op.lot)
  if not l then return {r = 'skipped', reason = 'gone'} end
  if l.expires_at > NOW then return {r = 'skipped', reason = 'not_due'} end
  if l.held > 0 then return {r = 'skipped', reason = 'held'} end
  local n = l.qty
  local moved = {lot_delta(l, -n, 0)}
  l.qty = 0
  local seq = next_seq()
  change(op.sku, -n, 0, seq)
  save_lots(op.sku, lots)
  local after = counters(op.sku)
  append(seq, 'expiry', {{sku = op.sku, d_on_hand = -n, d_reserved = 0, lots = moved}}, {
    qty = n, event_at_ms = l.expires_at, on_hand_after = after.on_hand,
    reserved_after = after.reserved,
  })
  local result = {seq = seq, on_hand = after.on_hand, reserved = after.reserved,
    available = after.on_hand - after.reserved, lots = moved}
  return {r = 'ok', seq = seq, result = result, stock = {after}}
end
