-- Stage a delta under its version (idempotent): the general path folds it in version order.
-- KEYS[1]: the hash. ARGV: version, payload, expire-at. `_p` counts the staged deltas.
local current = redis.call('HGET', KEYS[1], '_v')
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
if redis.call('HSETNX', KEYS[1], 'pend:' .. ARGV[1], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[1], '_p', 1)
end
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return 1
