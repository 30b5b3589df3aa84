"""The Redis side of `bastion/state/algorithms.py`: one Lua script that checks and charges every limit of a
request atomically, in one round trip. Keep it in step with the Python functions (the same test table runs
against both backends).

KEYS[i]: one hash per hit. ARGV[1]: now (wall seconds); then 6 values per hit: kind (tb|sw|fw), limit,
period, cost, take, anchor. Returns 5 values per hit: allowed (0/1), remaining, reset, retry_after, granted.
"""

from __future__ import annotations

HIT = r"""
local now = tonumber(ARGV[1])
local MIN_TTL = 60
local out = {}
local writes = {}
local admitted = true

local function take_units(cost, take, available)
  if take > cost then
    return math.max(cost, math.min(take, math.floor(available)))
  end
  return cost
end

for i = 1, #KEYS do
  local b = 1 + (i - 1) * 6
  local kind = ARGV[b + 1]
  local limit = tonumber(ARGV[b + 2])
  local period = tonumber(ARGV[b + 3])
  local cost = tonumber(ARGV[b + 4])
  local take = tonumber(ARGV[b + 5])
  local anchor = tonumber(ARGV[b + 6])
  local allowed, remaining, reset, retry, granted, ttl = 0, 0, 0, 0, 0, MIN_TTL
  if kind == 'tb' then
    local st = redis.call('HMGET', KEYS[i], 'a', 'b')
    local rate = limit / period
    local tokens, ts = tonumber(st[1]), tonumber(st[2])
    if tokens == nil or ts == nil then tokens = limit; ts = now end
    local elapsed = now - ts
    if elapsed < 0 then elapsed = 0 end
    tokens = math.min(limit, tokens + elapsed * rate)
    if ts < now then ts = now end
    ttl = math.max(MIN_TTL, period + 1)
    if tokens >= cost then
      granted = take_units(cost, take, tokens)
      local left = tokens - granted
      allowed, remaining, reset = 1, math.floor(left), (limit - left) / rate
      writes[#writes + 1] = {KEYS[i], string.format('%.17g', left), string.format('%.17g', ts), '', ttl}
    else
      retry = (cost - tokens) / rate
      remaining, reset = math.floor(tokens), retry
    end
  elseif kind == 'sw' then
    local st = redis.call('HMGET', KEYS[i], 'a', 'b', 'c')
    local index = math.floor(now / period)
    local elapsed = now - index * period
    local current, previous = 0, 0
    local stored = tonumber(st[1])
    if stored ~= nil then
      if stored == index then
        current, previous = tonumber(st[2]), tonumber(st[3])
      elseif stored == index - 1 then
        previous = tonumber(st[2])
      end
    end
    local estimate = previous * (1 - elapsed / period) + current
    ttl = math.max(MIN_TTL, 2 * period + 1)
    local available = limit - estimate
    if available >= cost then
      granted = take_units(cost, take, available)
      current = current + granted
      allowed, remaining, reset = 1, math.floor(available - granted), period - elapsed
      writes[#writes + 1] = {KEYS[i], string.format('%.17g', index), string.format('%.17g', current),
                             string.format('%.17g', previous), ttl}
    else
      local room = limit - current - cost
      if room >= 0 and previous > 0 then
        retry = period * (1 - room / previous) - elapsed
      else
        retry = period - elapsed
        if current > 0 then
          retry = retry + math.max(0, period * (1 - (limit - cost) / current))
        end
      end
      retry = math.max(retry, 0.001)
      remaining, reset = math.max(0, math.floor(available)), retry
    end
  else -- 'fw': calendar window [anchor, anchor + period)
    local st = redis.call('HMGET', KEYS[i], 'a', 'b')
    local count = 0
    if tonumber(st[1]) == anchor then count = tonumber(st[2]) end
    reset = anchor + period - now
    if reset < 0 then reset = 0 end
    ttl = math.max(MIN_TTL, reset + 1)
    local available = limit - count
    if available >= cost then
      granted = take_units(cost, take, available)
      allowed, remaining = 1, math.floor(available - granted)
      writes[#writes + 1] = {KEYS[i], string.format('%.17g', anchor), string.format('%.17g', count + granted),
                             '', ttl}
    else
      retry = reset
      remaining = math.max(0, math.floor(available))
    end
  end
  if allowed == 0 then admitted = false end
  out[#out + 1] = allowed
  out[#out + 1] = remaining
  out[#out + 1] = string.format('%.17g', reset)
  out[#out + 1] = string.format('%.17g', retry)
  out[#out + 1] = granted
end

if admitted then  -- all or nothing: a refused request charges no limit
  for _, w in ipairs(writes) do
    if w[4] == '' then
      redis.call('HSET', w[1], 'a', w[2], 'b', w[3])
    else
      redis.call('HSET', w[1], 'a', w[2], 'b', w[3], 'c', w[4])
    end
    redis.call('PEXPIRE', w[1], math.ceil(w[5] * 1000))
  end
else
  for i = 1, #out, 5 do out[i + 4] = 0 end  -- nothing was taken
end
return out
"""

KIND_CODES = {"token_bucket": "tb", "sliding_window": "sw", "fixed_window": "fw"}
