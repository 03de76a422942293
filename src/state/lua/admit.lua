-- Admits one request of a gateway key, or refuses it, atomically: every limit is checked
-- first and only when all pass is anything changed. Mirrors `state::memory`; `now`, `level`,
-- `ms_for` and `store` come from `bucket.lua`.
--
-- KEYS: 1 requests bucket (hash l, t), 2 tokens bucket (hash l, t), 3 concurrency slots
--       (zset member -> lease end ms), 4 requests this minute, 5 spend in the budget window
-- ARGV: 1 rpm (0: none), 2 tpm (0: none), 3 max_concurrent (0: none),
--       4 budget in nano-USD (-1: none), 5 estimated tokens, 6 slot member, 7 lease ms
-- Returns {code, requests remaining, requests reset ms, tokens remaining, tokens reset ms,
--          retry ms}; code 0 admitted, 1 requests, 2 tokens, 3 concurrency, 4 budget.
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local max_concurrent = tonumber(ARGV[3])
local budget = tonumber(ARGV[4])
local estimate = tonumber(ARGV[5])
local lease = tonumber(ARGV[7])

local rl, tl = 0, 0
if rpm > 0 then rl = level(KEYS[1], rpm) end
if tpm > 0 then tl = level(KEYS[2], tpm) end
local function answer(code, retry)
  local rem_r, rem_t = math.floor(rl), math.floor(tl)
  if rem_r < 0 then rem_r = 0 end
  if rem_t < 0 then rem_t = 0 end
  return {code, rem_r, ms_for(rpm - rl, rpm), rem_t, ms_for(tpm - tl, tpm), retry}
end

if budget >= 0 then
  local spent = tonumber(redis.call('GET', KEYS[5]) or '0') or 0
  if spent >= budget then return answer(4, 0) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if max_concurrent > 0 and redis.call('ZCARD', KEYS[3]) >= max_concurrent then
  return answer(3, 1000)
end
if rpm > 0 and rl < 1 then return answer(1, ms_for(1 - rl, rpm)) end
if tpm > 0 then
  local need = math.min(estimate, tpm)
  if tl < need then return answer(2, ms_for(need - tl, tpm)) end
end

if rpm > 0 then
  rl = rl - 1
  store(KEYS[1], rl, rpm)
end
if tpm > 0 then
  tl = tl - estimate
  store(KEYS[2], tl, tpm)
end
redis.call('ZADD', KEYS[3], now + lease, ARGV[6])
redis.call('PEXPIRE', KEYS[3], lease * 2)
redis.call('INCR', KEYS[4])
redis.call('EXPIRE', KEYS[4], 120)
return answer(0, 0)
