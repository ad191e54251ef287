-- reserve.lua: holds every line of a cart, or none.
-- op: {op="reserve", id, idem, hash, lines=[{sku, qty}], expires_at, channel, customer_ref?, pin?}
-- returns one of
--   {r="ok", seq, res, stock=[counters of each line]}
--   {r="replay", res}              the Idempotency-Key was seen with the same body
--   {r="conflict", message}        the Idempotency-Key was seen with another body
--   {r="out_of_stock", lines=[{sku, requested, available}]}
-- invariant: a hold never takes a SKU's available (on_hand - reserved) below zero, nor a unit
-- of a lot that expires before the hold does (its lots' units are named in `res.lots`).
local function reserve(op)
  local prior = redis.call('HGET', K_IDEM, op.idem)
  if prior then
    prior = cjson.decode(prior)
    local res = load_res(prior.id)
    if prior.hash ~= op.hash or not res then
      return {r = 'conflict', message = 'this Idempotency-Key was used for another request'}
    end
    return {r = 'replay', res = res}
  end

  -- Each line's lots as read for the check (a cart names each SKU once), taken from below.
  local short, n, line_lots = {}, 0, {}
  for i, line in ipairs(op.lines) do
    local c = counters(line.sku)
    line_lots[i] = c.lots or {}
    local available = c.on_hand - c.reserved - spoiling(line_lots[i], op.expires_at)
    if available < line.qty then
      n = n + 1
      short[n] = {sku = line.sku, requested = line.qty, available = math.max(available, 0)}
    end
  end
  if n > 0 then return {r = 'out_of_stock', lines = short} end

  local seq = next_seq()
  local doc_lines, stock, held = {}, {}, {}
  for i, line in ipairs(op.lines) do
    change(line.sku, 0, line.qty, seq)
    doc_lines[i] = {sku = line.sku, d_on_hand = 0, d_reserved = line.qty}
    local lots = line_lots[i]
    local moved = take_lots(lots, line.qty, op.expires_at, true)
    if #moved > 0 then
      save_lots(line.sku, lots)
      doc_lines[i].lots = moved
      for _, m in ipairs(moved) do held[#held + 1] = {sku = line.sku, lot = m.lot, qty = m.d_held} end
    end
    stock[i] = counters(line.sku)
  end
  local res = {
    id = op.id, status = 'held', lines = op.lines, expires_at = op.expires_at,
    channel = op.channel, customer_ref = op.customer_ref, idem = op.idem, hash = op.hash,
    created_at = NOW, held_seq = seq, pin = op.pin,
  }
  if #held > 0 then res.lots = held end
  redis.call('HSET', K_RES, op.id, cjson.encode(res))
  redis.call('HSET', K_IDEM, op.idem, cjson.encode({id = op.id, hash = op.hash}))
  redis.call('ZADD', K_FORGET, NOW + RES_RETAIN_MS, 'i:' .. op.idem)
  append(seq, 'reservation_held', doc_lines, {
    reservation = op.id, channel = op.channel, customer_ref = op.customer_ref,
    expires_at_ms = op.expires_at, idempotency_key = op.idem, body_hash = op.hash,
    pin = op.pin,
  })
  return {r = 'ok', seq = seq, res = res, stock = stock}
end
