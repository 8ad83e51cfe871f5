-- authorize: check an API key and charge its rate limit, or charge an anonymous
-- client's rate limit, in one step. Nothing is charged unless the key is known, not
-- revoked, holds the right scope and its secret's digest matches.
--
-- KEYS[1]   the bucket: a STRING holding the GCRA theoretical arrival time (µs)
-- KEYS[2]   the API key's record (HASH; see broker/keys.py); absent for anonymous use
-- ARGV[1]   cost: events this request counts as (a batch: its size)
-- ARGV[2]   anonymous only: events per second (0: no limit)
-- ARGV[3]   anonymous only: burst (events at once)
-- ARGV[4]   keyed only: SHA-256 hex digest of the presented token
-- ARGV[5]   keyed only: the scope the request needs (ingest, read or admin)
-- ARGV[6]   optional: the time in µs to use instead of the server's clock (tests only)
-- Returns   {code, scope, name, stored digest, limit, remaining, reset µs, retry µs,
--            window s, namespace}
--           code 0 unknown key or wrong secret (one answer for both: nothing changed)
--                1 revoked, 2 wrong scope (nothing charged)
--                3 allowed (charged), 4 over the limit (nothing charged; retry µs -1
--                when the cost is more than the burst and waiting cannot help)
--           limit is the burst (0 when no rate applies); window the seconds in which
--           an empty bucket refills (burst / rate), for RateLimit-Policy; namespace
--           the key's shared idempotency namespace ('' when it has none, or for
--           anonymous use).
-- Time is the server's (TIME), so every API process shares one clock. Numbers passed
-- to redis.call are formatted with %d: Lua would write 1e+14 for a large float.
-- Counters  none.
local cost = tonumber(ARGV[1])
local rate, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
local scope, name, stored, ns = '', '', '', ''
local now = tonumber(ARGV[6] or '')
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

if #KEYS > 1 then
  local rec = redis.call('HMGET', KEYS[2], 'h', 's', 'n', 'r', 'b', 'x', 'u', 'ns')
  stored = rec[1] or ''
  if stored ~= ARGV[4] or stored == '' then
    return {0, '', '', '', 0, 0, 0, 0, 0}
  end
  scope, name, ns = rec[2], rec[3], rec[8] or ''
  if rec[6] then
    return {1, scope, name, stored, 0, 0, 0, 0, 0}
  end
  if scope ~= 'admin' and scope ~= ARGV[5] then
    return {2, scope, name, stored, 0, 0, 0, 0, 0}
  end
  rate, burst = tonumber(rec[4] or 0), tonumber(rec[5] or 0)
  local now_ms = math.floor(now / 1000)
  if now_ms - tonumber(rec[7] or 0) >= 60000 then
    redis.call('HSET', KEYS[2], 'u', string.format('%d', now_ms))
  end
end

if rate <= 0 then
  return {3, scope, name, stored, 0, 0, 0, 0, 0, ns}
end
if burst < 1 then burst = 1 end
local interval = 1000000 / rate
local window = math.ceil(burst * interval / 1000000)
-- Work with durations relative to now (the backlog of the bucket, in µs), never with
-- absolute times plus huge intervals: at a very low rate, now + interval - interval
-- is not now in floating point, and an idle key would be refused.
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
local backlog = math.max(0, tat - now)
local capacity = burst * interval
local after = backlog + cost * interval
if after > capacity then
  local left = math.max(0, math.floor((capacity - backlog) / interval))
  local retry = math.ceil(after - capacity)
  if cost > burst then retry = -1 end
  return {4, scope, name, stored, burst, left, math.ceil(backlog), retry, window, ns}
end
redis.call('SET', KEYS[1], string.format('%d', math.ceil(now + after)),
  'PX', string.format('%d', math.ceil(after / 1000) + 1))
local left = math.floor((capacity - after) / interval)
return {3, scope, name, stored, burst, left, math.ceil(after), 0, window, ns}
