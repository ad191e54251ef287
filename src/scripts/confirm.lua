-- confirm.lua: turns a live hold into a web sale (on_hand and reserved both drop).
-- op: {op="confirm", id, payment_ref}
-- returns one of
--   {r="ok", seq, res, stock}
--   {r="replay", res}                  already confirmed with this payment_ref
--   {r="expired", res, seq?, stock?}   past expires_at (released now if it was still held)
--   {r="conflict", res, message}       cancelled, or confirmed with another payment_ref
--   {r="not_found"}
-- invariant: a reservation is confirmed at most once, and never after its expires_at.
local function confirm(op)
  local res = load_res(op.id)
  if not res then return {r = 'not_found'} end
  if res.status == 'confirmed' then
    if res.payment_ref == op.payment_ref then return {r = 'replay', res = res} end
    return {r = 'conflict', res = res, message = 'the reservation was confirmed with another payment_ref'}
  end
  if res.status == 'held' and NOW >= res.expires_at then
    local broken = check_held(res)
    if broken then return broken end
    local seq, stock = end_hold(res, 'expired', 'reservation_released', {reason = 'expired'})
    return {r = 'expired', res = res, seq = seq, stock = stock}
  end
  if res.status == 'expired' then return {r = 'expired', res = res} end
  if res.status ~= 'held' then
    return {r = 'conflict', res = res, message = 'the reservation is ' .. res.status}
  end
  local broken = check_held(res)
  if broken then return broken end
  res.payment_ref = op.payment_ref
  local seq, stock = end_hold(res, 'confirmed', 'sale_web', {payment_ref = op.payment_ref})
  return {r = 'ok', seq = seq, res = res, stock = stock}
end
