-- ingest: accept a batch of events, each deduplicated and enqueued in one step.
--
-- KEYS[1] stream   KEYS[2] status   KEYS[3] counters
-- KEYS[4..]        idempotency keys ({p}:idem:<hash>), one per event that has one
-- ARGV[1]          dedupe window, ms
-- ARGV[2]          n, the number of events
-- ARGV[3+3i..]     for event i (0-based): event id, envelope, index into KEYS of its
--                  idempotency key (0 when it has none)
-- Returns          a flat list: for each event, the event id it is known by and
--                  1 when it was a duplicate (nothing enqueued) or 0 when enqueued.
-- Counters         received (+1 per enqueued event), duplicates (+1 per duplicate)
local ttl = ARGV[1]
local n = tonumber(ARGV[2])
local out = {}
local received, duplicates = 0, 0
for i = 0, n - 1 do
  local base = 3 + i * 3
  local id, env, k = ARGV[base], ARGV[base + 1], tonumber(ARGV[base + 2])
  local existing = false
  if k > 0 then
    existing = redis.call('GET', KEYS[k])
    if not existing then
      redis.call('SET', KEYS[k], id, 'PX', ttl)
    end
  end
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 1
    duplicates = duplicates + 1
  else
    local entry = redis.call('XADD', KEYS[1], '*', 'id', id, 'a', '0', 'f', '', 'e', env)
    redis.call('HSET', KEYS[2], id, 'q:' .. entry)
    out[#out + 1] = id
    out[#out + 1] = 0
    received = received + 1
  end
end
if received > 0 then redis.call('HINCRBY', KEYS[3], 'received', received) end
if duplicates > 0 then redis.call('HINCRBY', KEYS[3], 'duplicates', duplicates) end
return out
