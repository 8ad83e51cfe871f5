-- ingest: accept a batch of events, each deduplicated and enqueued in one step.
--
-- KEYS[1] stream   KEYS[2] status   KEYS[3] counters
-- KEYS[4..]        dedupe records ({p}:idem:<hash>), one per event that has an
--                  idempotency key, in the order of those events
-- ARGV[1]          dedupe window, ms
-- ARGV[2]          n, the number of events
-- ARGV[3]          m, the number of events that have an idempotency key
-- ARGV[4..3+m]     the 0-based positions of those events (ascending); the j-th of
--                  them has KEYS[3+j]
-- ARGV[4+m..3+2m]  their content fingerprints (8 characters; '' when any content
--                  counts as a repeat), in the same order
-- ARGV[4+2m+2i..]  for event i (0-based): event id, envelope
-- Dedupe record    the event id followed by its fingerprint. A record holding just an
--                  id (a replay, or written before fingerprints) matches any content.
--                  Event ids all have one length (36), which tells where the id ends.
-- Stream entry     fields id, e. A fresh event has made no attempt, so the attempt
--                  fields (a, f) are left out; readers take their absence as 0 and ''.
-- Returns          a flat list for the events not enqueued only: for each, its
--                  position, the id of the event accepted first under its key, and 1
--                  (a duplicate: same content) or 2 (a conflict: other content; the
--                  record is left as it was). Every other event was enqueued under the
--                  id it was given.
-- Counters         received (+1 per enqueued event), duplicates (+1 per duplicate)
local ttl = ARGV[1]
local n, m = tonumber(ARGV[2]), tonumber(ARGV[3])
local keyed = {}
for j = 1, m do
  keyed[tonumber(ARGV[3 + j])] = j
end
local base = 4 + 2 * m
local out = {}
local status = {}
local received, duplicates = 0, 0
for i = 0, n - 1 do
  local id = ARGV[base + 2 * i]
  local j = keyed[i]
  local existing = false
  if j then
    existing = redis.call('GET', KEYS[3 + j])
    if not existing then
      redis.call('SET', KEYS[3 + j], id .. ARGV[3 + m + j], 'PX', ttl)
    end
  end
  if existing then
    local first, seen = string.sub(existing, 1, #id), string.sub(existing, #id + 1)
    local mine = ARGV[3 + m + j]
    out[#out + 1] = i
    out[#out + 1] = first
    if seen ~= '' and mine ~= '' and seen ~= mine then
      out[#out + 1] = 2
    else
      out[#out + 1] = 1
      duplicates = duplicates + 1
    end
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
