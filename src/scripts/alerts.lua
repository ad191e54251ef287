-- Raises and clears an outlet's alerts (alerts.rs), fenced like every write to the outlet.
-- KEYS: 1 alerts hash  2 epoch  3 lease (of one outlet, sharing its hash tag; see keys.rs)
-- ARGV: 1 the caller's fencing token  2 the caller's node id
--       3 JSON {"raise": [[field, alert JSON], ...], "clear": [field, ...]}
-- returns JSON, one of
--   {"fenced":true}                   the caller no longer owns the outlet: nothing changed
--   {"raised":[bool...], "cleared":[JSON or false...]}
--       per raise whether its HSETNX created the field; per clear the alert it removed (read
--       and deleted in this one step, so a clear always names the raise it ends)
-- invariant: a field is raised by exactly one call and cleared by exactly one call.

if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[1])
    or redis.call('GET', KEYS[3]) ~= ARGV[2] .. ' ' .. ARGV[1] then
  return cjson.encode({fenced = true})
end
local asked = cjson.decode(ARGV[3])
local raised, cleared = {}, {}
for i, r in ipairs(asked.raise) do
  raised[i] = redis.call('HSETNX', KEYS[1], r[1], r[2]) == 1
end
for i, field in ipairs(asked.clear) do
  local was = redis.call('HGET', KEYS[1], field)
  if was then
    redis.call('HDEL', KEYS[1], field)
    cleared[i] = was
  else
    cleared[i] = false
  end
end
return cjson.encode({raised = raised, cleared = cleared})
