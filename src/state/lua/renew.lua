-- Extends the leases of this replica's concurrency slots of one key that are still running
-- (re-adding any an outage let expire: they are still in flight).
-- KEYS: 1 concurrency slots. ARGV: 1 lease ms, 2.. slot members.
-- `now` comes from `bucket.lua`.
local lease = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], lease * 2)
return #ARGV - 1
