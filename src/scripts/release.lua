-- release.lua: returns a live hold's units (cancel by the customer, expiry, or a re-route
-- after the hold at another outlet `rerouted_to` took over its cart).
-- op: {op="release", id, reason="cancelled"|"expired"|"rerouted", rerouted_to?}
-- returns one of
--   {r="ok", seq, res, stock}
--   {r="noop", res}        not held any more (or, for an expiry, not yet due)
--   {r="not_found"}
-- invariant: a hold's units are returned exactly once, whichever of cancel and expiry
-- comes first; an expiry never releases a hold before its expires_at.
local function release(op)
  local res = load_res(op.id)
  if not res then return {r = 'not_found'} end
  if res.status ~= 'held' then return {r = 'noop', res = res} end
  local reason = op.reason
  if reason == 'expired' and NOW < res.expires_at then
    return {r = 'noop', res = res}
  end
  local broken = check_held(res)
  if broken then return broken end
  local doc = {reason = reason}
  if reason == 'rerouted' then
    res.rerouted_to = op.rerouted_to
    doc.rerouted_to = op.rerouted_to
  end
  local seq, stock = end_hold(res, reason, 'reservation_released', doc)
  return {r = 'ok', seq = seq, res = res, stock = stock}
end
