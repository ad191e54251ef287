-- movement.lua: one stock movement of one SKU (counter sale, receipt, wastage, return,
-- adjustment, count, or one half of a transfer).
-- op: {op="movement", key, hash, kind, sku, qty, event_id, event_at, note?, counterpart?,
--      lot?, lots?}
--   kind is a ledger kind; qty is signed for adjustment and the counted on_hand for count.
--   Units coming in go into the lots of `lots` ({lot, made_at, expires_at, qty}, at most qty
--   in all; a lot already here must have the same times), the rest are loose. Units going out
--   come from lot `lot` when it is named, else from the lots good now, earliest expiry first,
--   then from the loose units; a fact (a counter sale, wastage, a count below on_hand) that
--   finds no more takes units of lots past their expiry not yet written off, and past those
--   it leaves a shortfall. A request (transfer_out, a negative adjustment) takes only good
--   units, and a named lot only when it is good and has the units.
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
  -- A request may take only what is available in good units: a lot past its expiry whose
  -- write-off has not run yet is not available.
  local lots = lots_of(op.sku)
  local good = c.on_hand - c.reserved - spoiling(lots, NOW)
  if op.kind == 'transfer_out' and good < op.qty then
    return {r = 'out_of_stock', lines = {{sku = op.sku, requested = op.qty,
      available = math.max(good, 0)}}}
  end
  if op.kind == 'adjustment' and d < 0 and good + d < 0 then
    return {r = 'invalid', field = 'qty', message = 'the adjustment would take available below zero (on_hand ' ..
      c.on_hand .. ', reserved ' .. c.reserved .. ')'}
  end
  local request = op.kind == 'transfer_out' or op.kind == 'adjustment'

  -- Loose units not held: on_hand and reserved beyond the lots' (may be below zero).
  local loose_free = c.on_hand - c.reserved
  for _, l in ipairs(lots) do loose_free = loose_free - (l.qty - l.held) end

  local moved = {}
  if d < 0 then
    local n = -d
    if op.lot then
      local l = find_lot(lots, op.lot)
      local free = 0
      if l then free = l.qty - l.held end
      if request and (free < n or l.expires_at <= NOW) then
        local why = ' has ' .. math.max(free, 0) .. ' units not held'
        if l and l.expires_at <= NOW then why = ' has expired' end
        if op.kind == 'transfer_out' then
          local good_units = 0
          if l and l.expires_at > NOW then good_units = math.max(free, 0) end
          return {r = 'out_of_stock', lines = {{sku = op.sku, requested = n, available = good_units}}}
        end
        return {r = 'invalid', field = 'lot', message = 'lot ' .. op.lot .. ' of ' .. op.sku .. why}
      end
      -- A fact names the lot it took; what the lot has not got comes the usual way.
      local k = math.min(math.max(free, 0), n)
      if k > 0 then
        l.qty = l.qty - k
        moved[1] = lot_delta(l, -k, 0)
        n = n - k
      end
    end
    if n > 0 then
      -- Lots good now, earliest expiry first; then loose units; then (a fact only: a sale or
      -- a write-off that happened) units of lots past their expiry whose write-off has not run
      -- yet, so that it does not write them off again.
      local from_good, rest = take_lots(lots, n, NOW, false)
      for _, m in ipairs(from_good) do moved[#moved + 1] = m end
      rest = rest - math.max(math.min(loose_free, rest), 0)
      if rest > 0 and not request then
        local from_expired = take_lots(lots, rest, -math.huge, false)
        for _, m in ipairs(from_expired) do moved[#moved + 1] = m end
      end
    end
  elseif d > 0 then
    local left = d
    for _, given in ipairs(op.lots or {}) do
      local id = given.lot
      local l = find_lot(lots, id)
      local function clash() return l and (l.expires_at ~= given.expires_at or l.made_at ~= given.made_at) end
      if clash() and op.kind == 'transfer_in' then
        -- Units on their way are never refused: a lot of the same name made at other times
        -- here keeps its name, the arriving one takes the first free `{lot}_{n}`.
        local n = 2
        repeat
          id = given.lot .. '_' .. n
          l = find_lot(lots, id)
          n = n + 1
        until not clash()
      end
      if clash() then
        return {r = 'invalid', field = 'lot', message = 'lot ' .. id .. ' of ' .. op.sku ..
          ' is here with other made_at and expires_at times'}
      end
      if op.kind ~= 'transfer_in' and given.expires_at <= NOW then
        return {r = 'invalid', field = 'expires_at',
          message = 'is past: an expired lot is not taken in (record it as wastage where it is)'}
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
