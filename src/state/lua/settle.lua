-- Settles one finished request of a gateway key: gives back the tokens it reserved beyond
-- what it used (or takes the excess), counts its tokens and spend, and frees its
-- concurrency slot. Mirrors `state::memory`.
--
-- KEYS: 1 tokens bucket, 2 tokens this minute, 3 spend in the budget window,
--       4 concurrency slots
-- ARGV: 1 tpm (0: none), 2 reserved tokens, 3 used tokens, 4 spend nano-USD,
--       5 seconds the spend window has left (0: no end), 6 slot member
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tpm = tonumber(ARGV[1])
local reserved = tonumber(ARGV[2])
local used = tonumber(ARGV[3])
local spend = tonumber(ARGV[4])
local window_left = tonumber(ARGV[5])

if tpm > 0 and reserved ~= used then
  local v = redis.call('HMGET', KEYS[1], 'l', 't')
  local l, at = tonumber(v[1]), tonumber(v[2])
  if l == nil or at == nil then l = tpm
  elseif now > at then l = l + (now - at) * tpm / 60000 end
  l = l + reserved - used
  if l > tpm then l = tpm end
  redis.call('HSET', KEYS[1], 'l', l, 't', now)
  local refill = 0
  if l < tpm then refill = math.ceil((tpm - l) * 60000 / tpm) end
  redis.call('PEXPIRE', KEYS[1], refill + 1000)
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
