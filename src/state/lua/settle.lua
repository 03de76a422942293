-- Settles one finished request of a gateway key: gives back the tokens it reserved beyond
-- what it used (or takes the excess), counts its tokens and spend, and frees its
-- concurrency slot. Mirrors `state::memory`; `now`, `level` and `store` come from
-- `bucket.lua`.
--
-- KEYS: 1 tokens bucket, 2 tokens this minute, 3 spend in the budget window,
--       4 concurrency slots
-- ARGV: 1 tpm (0: none), 2 reserved tokens, 3 used tokens, 4 spend nano-USD,
--       5 seconds the spend window has left (0: no end), 6 slot member
local tpm = tonumber(ARGV[1])
local reserved = tonumber(ARGV[2])
local used = tonumber(ARGV[3])
local spend = tonumber(ARGV[4])
local window_left = tonumber(ARGV[5])

if tpm > 0 and reserved ~= used then
  local l = level(KEYS[1], tpm) + reserved - used
  if l > tpm then l = tpm end
  store(KEYS[1], l, tpm)
end
if used > 0 then
  redis.call('INCRBY', KEYS[2], used)
  redis.call('EXPIRE', KEYS[2], 120)
end
if spend > 0 then
  redis.call('INCRBY', KEYS[3], spend)
  if window_left > 0 then redis.call('EXPIRE', KEYS[3], window_left + 86400) end
end
redis.call('ZREM', KEYS[4], ARGV[6])
return 1
