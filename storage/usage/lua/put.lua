-- Write a copy of a segment's rollups (read back from PostgreSQL at `version`) unless Redis
-- already holds that version or a newer one (see storage/usage/counters.py).
-- KEYS[1]: the hash. ARGV: version, expire-at, gap check ('1': refuse unless Redis holds the
-- version just before, or nothing and this is version 1), n, then n field/value pairs.
-- Returns 1 written, 0 Redis as new or newer (nothing done), -1 refused: a version gap.
local current = redis.call('HGET', KEYS[1], '_v')
local version = tonumber(ARGV[1])
if current and tonumber(current) >= version then return 0 end
if ARGV[3] == '1' and (tonumber(current or '0') ~= version - 1) then return -1 end
redis.call('DEL', KEYS[1])
local i = 5
for _ = 1, tonumber(ARGV[4]) do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('HSET', KEYS[1], '_v', ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
return 1
