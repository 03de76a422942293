-- Prepended to every script: Redis's clock (so replicas agree) and the token-bucket
-- arithmetic of `state::limits::Bucket`.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- A bucket's level now: refilled at `capacity` per minute since its last update, at most
-- `capacity`; a missing bucket is full.
local function level(key, capacity)
  local v = redis.call('HMGET', key, 'l', 't')
  local l, at = tonumber(v[1]), tonumber(v[2])
  if l == nil or at == nil then return capacity end
  if now > at then l = l + (now - at) * capacity / 60000 end
  if l > capacity then l = capacity end
  return l
end

-- Milliseconds a bucket of `capacity` per minute takes to gain `amount`.
local function ms_for(amount, capacity)
  if amount <= 0 or capacity <= 0 then return 0 end
  return math.ceil(amount * 60000 / capacity)
end

-- Writes a bucket's level as of now. A bucket left alone until full needs no key: a missing
-- one reads as full, so the key expires then.
local function store(key, l, capacity)
  redis.call('HSET', key, 'l', l, 't', now)
  redis.call('PEXPIRE', key, ms_for(capacity - l, capacity) + 1000)
end

