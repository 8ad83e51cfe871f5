-- ingest: accept a batch of events, each deduplicated and enqueued in one step.
--
-- KEYS[1] stream   KEYS[2] status   KEYS[3] counters
-- KEYS[4..]        idempotency keys ({p}:idem:<hash>), one per event that has one,
--                  in the order of those events
-- ARGV[1]          dedupe window, ms
-- ARGV[2]          n, the number of events
-- ARGV[3]          m, the number of events that have an idempotency key
-- ARGV[4..3+m]     the 0-based positions of those events (ascending); the j-th of
--                  them has KEYS[3+j]
-- ARGV[4+m+2i..]   for event i (0-based): event id, envelope
-- Stream entry     fields id, e. A fresh event has made no attempt, so the attempt
--                  fields (a, f) are left out; readers take their absence as 0 and ''.
-- Returns          a flat list of the duplicates only: for each, its position and
--                  the id of the event accepted first (every other event was
--                  enqueued under the id it was given).
-- Counters         received (+1 per enqueued event), duplicates (+1 per duplicate)
local ttl = ARGV[1]
local n, m = tonumber(ARGV[2]), tonumber(ARGV[3])
local keyed = {}
for j = 1, m do
  keyed[tonumber(ARGV[3 + j])] = 3 + j
end
local base = 4 + m
local out = {}
local status = {}
local received, duplicates = 0, 0
for i = 0, n - 1 do
  local id = ARGV[base + 2 * i]
  local k = keyed[i]
  local existing = false
  if k then
    existing = redis.call('GET', KEYS[k])
    if not existing then
      redis.call('SET', KEYS[k], id, 'PX', ttl)
    end
  end
  if existing then
    out[#out + 1] = i
    out[#out + 1] = existing
    duplicates = duplicates + 1
  else
    local entry = redis.call('XADD', KEYS[1], '*', 'id', id, 'e', ARGV[base + 2 * i + 1])
    status[#status + 1] = id
    status[#status + 1] = 'q:' .. entry
    received = received + 1
  end
end
-- One HSET per thousand events instead of one per event (unpack's stack is bounded).
for s = 1, #status, 2000 do
  redis.call('HSET', KEYS[2], unpack(status, s, math.min(s + 1999, #status)))
end
if received > 0 then redis.call('HINCRBY', KEYS[3], 'received', received) end
if duplicates > 0 then redis.call('HINCRBY', KEYS[3], 'duplicates', duplicates) end
return out
