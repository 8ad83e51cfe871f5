-- ingest: accept a batch of events, each deduplicated and enqueued in one step.
--
-- KEYS[1] stream   KEYS[2] status   KEYS[3] counters
-- KEYS[4] order    KEYS[5] lines    KEYS[6] parked   KEYS[7] waiting (order.lua)
-- KEYS[8..]        dedupe records ({p}:idem:<hash>), one per event that has an
--                  idempotency key, in the order of those events
-- ARGV[1]          dedupe window, ms
-- ARGV[2]          n, the number of events
-- ARGV[3]          m, the number of events that have an idempotency key
-- ARGV[4..3+m]     the 0-based positions of those events (ascending); the j-th of
--                  them has KEYS[7+j]
-- ARGV[4+m..3+2m]  their content fingerprints (8 characters; '' when any content
--                  counts as a repeat), in the same order
-- ARGV[4+2m]       o, the number of events that have an ordering key
-- ARGV[5+2m..]     o pairs: the 0-based position of such an event, its key's digest
-- ARGV[5+2m+2o+2i..] for event i (0-based): event id, envelope
-- Ordering         an event with an ordering key enters the stream when its key is
--                  idle, else it is parked behind the key's events (order_admit).
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
-- Counters         received (+1 per enqueued event), duplicates (+1 per duplicate),
--                  parked (+1 per event parked behind its key)
local ttl = ARGV[1]
local n, m = tonumber(ARGV[2]), tonumber(ARGV[3])
local keyed = {}
for j = 1, m do
  keyed[tonumber(ARGV[3 + j])] = j
end
local ordered = {}
local o_count = tonumber(ARGV[4 + 2 * m])
for j = 0, o_count - 1 do
  ordered[tonumber(ARGV[5 + 2 * m + 2 * j])] = ARGV[6 + 2 * m + 2 * j]
end
local o = order_keys(4)
local admission = o_count > 0 and order_admission(o, order_now())
local base = 5 + 2 * m + 2 * o_count
local out = {}
local status = {}
local received, duplicates = 0, 0
for i = 0, n - 1 do
  local id = ARGV[base + 2 * i]
  local j = keyed[i]
  local existing = false
  if j then
    existing = redis.call('GET', KEYS[7 + j])
    if not existing then
      redis.call('SET', KEYS[7 + j], id .. ARGV[3 + m + j], 'PX', ttl)
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
    local kd = ordered[i]
    status[#status + 1] = id
    if kd then
      status[#status + 1] = order_admit(admission, kd, id, ARGV[base + 2 * i + 1])
    else
      status[#status + 1] = 'q:' .. redis.call('XADD', KEYS[1], '*', 'id', id, 'e', ARGV[base + 2 * i + 1])
    end
    received = received + 1
  end
end
-- One HSET per thousand events instead of one per event (unpack's stack is bounded).
for s = 1, #status, 2000 do
  redis.call('HSET', KEYS[2], unpack(status, s, math.min(s + 1999, #status)))
end
if admission then order_admitted(admission) end
if received > 0 then redis.call('HINCRBY', KEYS[3], 'received', received) end
if duplicates > 0 then redis.call('HINCRBY', KEYS[3], 'duplicates', duplicates) end
return out
