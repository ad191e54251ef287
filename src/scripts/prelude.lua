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

local function counters(sku)
  return {
    sku = sku,
    on_hand = int_field(K_ON_HAND, sku),
    reserved = int_field(K_RESERVED, sku),
    seq = int_field(K_SKU_SEQ, sku),
  }
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

-- A held reservation's units must still be reserved; anything else is a bug or a second
-- writer, and the operation is refused untouched so that the actor reloads.
local function check_held(res)
  for _, line in ipairs(res.lines) do
    if int_field(K_RESERVED, line.sku) < line.qty then
      return {r = 'broken', message = 'reservation ' .. res.id .. ' holds ' .. line.qty ..
        ' of ' .. line.sku .. ' but fewer are reserved'}
    end
  end
  return nil
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
    doc_lines[i] = {sku = line.sku, d_on_hand = d_on_hand, d_reserved = -line.qty}
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
