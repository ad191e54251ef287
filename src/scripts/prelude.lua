-- prelude.lua: helpers shared by every operation of an outlet batch.
-- Loaded first; reserve.lua, confirm.lua, release.lua, movement.lua and apply_batch.lua
-- follow it in one script (see store.rs). KEYS and ARGV are described in apply_batch.lua.
--
-- Invariant kept by every helper: a change bumps the outlet seq exactly once, records the
-- SKU's last seq, and appends exactly one ledger document with that seq to the outbox, all
-- inside this one atomic script. Checks come before writes, so a refused operation writes
-- nothing.

local K_ON_HAND, K_RESERVED, K_SKU_SEQ, K_SEQ = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_RES, K_IDEM, K_EVENTS, K_OUTBOX, K_FORGET = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local K_LOTS = KEYS[10]
local OUTLET = ARGV[1]
local NOW = tonumber(ARGV[2])
-- Who made the operation being applied (its `by`), written into its ledger document.
local BY = nil
local RES_RETAIN_MS = tonumber(ARGV[5])
local EVENT_RETAIN_MS = tonumber(ARGV[6])

local function int_field(key, field)
  local v = redis.call('HGET', key, field)
  if v then return tonumber(v) end
  return 0
end

-- A SKU's lots: {lot, made_at, expires_at, qty, held} (ms; qty on hand, held by live holds),
-- earliest expiry first (then by lot id). A SKU's on_hand counts its lots and its loose units
-- (on_hand minus the lots' qty: units received without a lot, which never expire).
local function lots_of(sku)
  local raw = redis.call('HGET', K_LOTS, sku)
  if raw then return cjson.decode(raw) end
  return {}
end

-- Writes a SKU's lots back, without the empty ones, in expiry order.
local function save_lots(sku, lots)
  local kept = {}
  for _, l in ipairs(lots) do
    if l.qty ~= 0 or l.held ~= 0 then kept[#kept + 1] = l end
  end
  if #kept == 0 then
    redis.call('HDEL', K_LOTS, sku)
    return
  end
  table.sort(kept, function(a, b)
    if a.expires_at ~= b.expires_at then return a.expires_at < b.expires_at end
    return a.lot < b.lot
  end)
  redis.call('HSET', K_LOTS, sku, cjson.encode(kept))
end

local function find_lot(lots, id)
  for _, l in ipairs(lots) do
    if l.lot == id then return l end
  end
  return nil
end

-- A lot's change as the ledger line records it.
local function lot_delta(l, d_qty, d_held)
  return {lot = l.lot, made_at = l.made_at, expires_at = l.expires_at, d_qty = d_qty, d_held = d_held}
end

-- Takes up to `n` unheld units from the lots still good after `after` (ms), earliest expiry
-- first: a hold takes them (`hold`: held rises) or they leave (qty falls). Returns the lot
-- deltas and how many of the n no lot had.
local function take_lots(lots, n, after, hold)
  local moved = {}
  for _, l in ipairs(lots) do
    if n <= 0 then break end
    local k = math.min(l.qty - l.held, n)
    if l.expires_at > after and k > 0 then
      if hold then
        l.held = l.held + k
        moved[#moved + 1] = lot_delta(l, 0, k)
      else
        l.qty = l.qty - k
        moved[#moved + 1] = lot_delta(l, -k, 0)
      end
      n = n - k
    end
  end
  return moved, n
end

-- Unheld units of lots that are not good after `after` (expired, or expiring before then).
local function spoiling(lots, after)
  local n = 0
  for _, l in ipairs(lots) do
    if l.expires_at <= after and l.qty > l.held then n = n + l.qty - l.held end
  end
  return n
end

local function counters(sku)
  local c = {
    sku = sku,
    on_hand = int_field(K_ON_HAND, sku),
    reserved = int_field(K_RESERVED, sku),
    seq = int_field(K_SKU_SEQ, sku),
  }
  local lots = lots_of(sku)
  -- cjson encodes an empty table as {}: a SKU without lots has no field.
  if #lots > 0 then c.lots = lots end
  return c
end

local function next_seq()
  return redis.call('INCR', K_SEQ)
end

-- Applies deltas to one SKU at `seq`.
local function change(sku, d_on_hand, d_reserved, seq)
  redis.call('HINCRBY', K_ON_HAND, sku, d_on_hand)
  redis.call('HINCRBY', K_RESERVED, sku, d_reserved)
  redis.call('HSET', K_SKU_SEQ, sku, seq)
end

-- Appends the ledger document of `seq`; the stream entry id is `{seq}-0`.
local function append(seq, kind, lines, doc)
  doc.outlet = OUTLET
  doc.seq = seq
  doc.kind = kind
  doc.at_ms = NOW
  doc.lines = lines
  doc.by = BY
  redis.call('XADD', K_OUTBOX, seq .. '-0', 'd', cjson.encode(doc))
end

local function load_res(id)
  local raw = redis.call('HGET', K_RES, id)
  if raw then return cjson.decode(raw) end
  return nil
end

-- A held reservation's units must still be reserved, and the units it holds of each lot still
-- held there; anything else is a bug or a second writer, and the operation is refused
-- untouched so that the actor reloads.
local function check_held(res)
  for _, line in ipairs(res.lines) do
    if int_field(K_RESERVED, line.sku) < line.qty then
      return {r = 'broken', message = 'reservation ' .. res.id .. ' holds ' .. line.qty ..
        ' of ' .. line.sku .. ' but fewer are reserved'}
    end
  end
  for _, h in ipairs(res.lots or {}) do
    local l = find_lot(lots_of(h.sku), h.lot)
    if not l or l.held < h.qty then
      return {r = 'broken', message = 'reservation ' .. res.id .. ' holds ' .. h.qty ..
        ' of lot ' .. h.lot .. ' of ' .. h.sku .. ' but fewer are held there'}
    end
  end
  return nil
end

-- The lot deltas of ending a hold's line: its lots' units stop being held, and leave when sold.
local function end_hold_lots(res, sku, sold)
  local held = {}
  for _, h in ipairs(res.lots or {}) do
    if h.sku == sku then held[#held + 1] = h end
  end
  if #held == 0 then return nil end
  local lots, moved = lots_of(sku), {}
  for _, h in ipairs(held) do
    local l = find_lot(lots, h.lot)
    l.held = l.held - h.qty
    local d_qty = 0
    if sold then
      l.qty = l.qty - h.qty
      d_qty = -h.qty
    end
    moved[#moved + 1] = lot_delta(l, d_qty, -h.qty)
  end
  save_lots(sku, lots)
  return moved
end

-- Ends a held reservation: `confirmed` sells its units, `cancelled` and `expired` return
-- them. Returns the new seq and the lines' counters after the change.
local function end_hold(res, status, kind, doc)
  local seq = next_seq()
  local sold = status == 'confirmed'
  local doc_lines, stock = {}, {}
  for i, line in ipairs(res.lines) do
    local d_on_hand = 0
    if sold then d_on_hand = -line.qty end
    change(line.sku, d_on_hand, -line.qty, seq)
    doc_lines[i] = {sku = line.sku, d_on_hand = d_on_hand, d_reserved = -line.qty,
      lots = end_hold_lots(res, line.sku, sold)}
    stock[i] = counters(line.sku)
  end
  res.status = status
  res.ended_seq = seq
  res.ended_at = NOW
  redis.call('HSET', K_RES, res.id, cjson.encode(res))
  redis.call('ZADD', K_FORGET, NOW + RES_RETAIN_MS, 'r:' .. res.id)
  doc.reservation = res.id
  doc.channel = res.channel
  append(seq, kind, doc_lines, doc)
  return seq, stock
end
