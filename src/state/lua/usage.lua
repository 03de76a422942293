-- One key's usage now, for `GET /admin/keys`.
-- KEYS: 1 requests this minute, 2 tokens this minute, 3 concurrency slots, 4 spend.
-- Returns {requests, tokens, in flight, spend nano-USD}.
-- `now` comes from `bucket.lua`.
local function number(key) return tonumber(redis.call('GET', key) or '0') or 0 end
return {number(KEYS[1]), number(KEYS[2]), redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf'),
  number(KEYS[4])}
