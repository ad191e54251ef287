-- reconcile.lua: the reconciler's two operations. They run inside the outlet's batches, in
-- arrival order with every other operation, so no request races an audit or a heal.
--
-- audit: reads the outlet's counters and seq, all at one seq.
--   op: {op="audit"}
--   returns {r="audit", seq, on_hand={sku: n}, reserved={sku: n}, lots={sku: [lot...]}}
-- heal: moves counters that drifted from the ledger back to the ledger's numbers. The
--   reconciler sends the correction as deltas (ledger minus Redis at the audited seq): every
--   change since then moved Redis and the ledger by the same amounts, so the deltas still hold.
--   op: {op="heal", lines=[{sku, d_on_hand, d_reserved, lots?=[{lot, made_at, expires_at,
--        d_qty, d_held}...]}...]} (at least one line; a lot's times become the ledger's)
--   returns {r="healed", stock}
-- invariant: neither bumps the seq nor writes the outbox: the ledger already has the numbers.
local function hash_numbers(key)
  local flat = redis.call('HGETALL', key)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = tonumber(flat[i + 1]) end
  -- cjson encodes an empty table as {}: an empty hash is still an object
  return t
end

local function hash_lots()
  local flat = redis.call('HGETALL', K_LOTS)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = cjson.decode(flat[i + 1]) end
  return t
end

local function audit(_)
  return {
    r = 'audit',
    seq = tonumber(redis.call('GET', K_SEQ) or '0'),
    on_hand = hash_numbers(K_ON_HAND),
    reserved = hash_numbers(K_RESERVED),
    lots = hash_lots(),
  }
end

local function heal(op)
  local stock = {}
  for i, line in ipairs(op.lines) do
    redis.call('HINCRBY', K_ON_HAND, line.sku, line.d_on_hand)
    redis.call('HINCRBY', K_RESERVED, line.sku, line.d_reserved)
    if line.lots then
      local lots = lots_of(line.sku)
      for _, d in ipairs(line.lots) do
        local l = find_lot(lots, d.lot)
        if not l then
          l = {lot = d.lot, qty = 0, held = 0}
          lots[#lots + 1] = l
        end
        l.made_at, l.expires_at = d.made_at, d.expires_at
        l.qty = l.qty + d.d_qty
        l.held = l.held + d.d_held
      end
      save_lots(line.sku, lots)
    end
    stock[i] = counters(line.sku)
  end
  return {r = 'healed', stock = stock}
end
