-- ingest: accept a batch of events, each deduplicated and enqueued in one step.
--
-- KEYS[1] stream   KEYS[2] status   KEYS[3] counters
-- KEYS[4] order    KEYS[5] lines    KEYS[6] parked   KEYS[7] waiting (order.lua)
-- KEYS[6+2j], KEYS[7+2j]  for the j-th event (1-based) that has an idempotency key:
--                  the hash of its dedupe record ({p}:dedupe:<s>) and the record an
--                  earlier version would have written ({p}:idem:<hash>, read only)
-- ARGV[1]          dedupe window, ms
-- ARGV[2]          n, the number of events
-- ARGV[3]          m, the number of events that have an idempotency key
-- ARGV[3+j]        the 0-based position of the j-th of them (ascending)
-- ARGV[3+m+j]      its record's field (12 bytes)
-- ARGV[3+2m+j]     its record's body: the event's id as 16 bytes, then its content's
--                  fingerprint (6 bytes; none when any content counts as a repeat)
-- ARGV[3+3m+j]     the same fingerprint as 8 characters (''), to compare with an
--                  earlier version's record
-- ARGV[4+4m]       o, the number of events that have an ordering key
-- ARGV[5+4m..]     o pairs: the 0-based position of such an event, its key's digest
-- ARGV[5+4m+2o+2i..] for event i (0-based): event id, envelope
-- Ordering         an event with an ordering key enters the stream when its key is
--                  idle, else it is parked behind the key's events (order_admit).
-- Dedupe record    a field of {p}:dedupe:<s>: 6 bytes of expiry (ms, big-endian), then
--                  the body. A record that has expired counts as absent and is written
--                  over. Each hash written to gets the window as its TTL unless it has
--                  a longer one (every record in it expires by then) and has SAMPLE
--                  random fields read, of which
--                  the expired ones are deleted: a write removes SAMPLE times the share
--                  of expired records, so that share stays near 1 / SAMPLE.
-- Stream entry     fields id, e. A fresh event has made no attempt, so the attempt
--                  fields (a, f) are left out; readers take their absence as 0 and ''.
-- Returns          a flat list for the events not enqueued only: for each, its
--                  position, the id of the event accepted first under its key, and 1
--                  (a duplicate: same content) or 2 (a conflict: other content; the
--                  record is left as it was). Every other event was enqueued under the
--                  id it was given.
-- Counters         received (+1 per enqueued event), duplicates (+1 per duplicate),
--                  parked (+1 per event parked behind its key)
local SAMPLE = 4
local ttl = tonumber(ARGV[1])
local n, m = tonumber(ARGV[2]), tonumber(ARGV[3])
local keyed = {}
for j = 1, m do
  keyed[tonumber(ARGV[3 + j])] = j
end
local ordered = {}
local o_count = tonumber(ARGV[4 + 4 * m])
for j = 0, o_count - 1 do
  ordered[tonumber(ARGV[5 + 4 * m + 2 * j])] = ARGV[6 + 4 * m + 2 * j]
end
local o = order_keys(4)
local now = order_now()
local admission = o_count > 0 and order_admission(o, now)
local base = 5 + 4 * m + 2 * o_count
local expiry = struct.pack('>I6', now + ttl)
local written = {}
local out = {}
local status = {}
local received, duplicates = 0, 0

-- A record's event id as text (a UUID's 36 characters).
local function uuid_text(raw)
  return string.format('%08x-%04x-%04x-%04x-%04x%08x', struct.unpack('>I4I2I2I2I2I4', raw))
end

-- The event accepted first under the j-th key, its fingerprint and the one to compare
-- it with; nil when the key has no live record.
local function earlier(j)
  local record = redis.call('HGET', KEYS[6 + 2 * j], ARGV[3 + m + j])
  if record and struct.unpack('>I6', record) > now then
    return uuid_text(string.sub(record, 7, 22)), string.sub(record, 23), string.sub(ARGV[3 + 2 * m + j], 17)
  end
  local old = redis.call('GET', KEYS[7 + 2 * j])
  if old then
    return string.sub(old, 1, 36), string.sub(old, 37), ARGV[3 + 3 * m + j]
  end
  return nil
end

for i = 0, n - 1 do
  local id = ARGV[base + 2 * i]
  local j = keyed[i]
  local first, seen, mine
  if j then
    first, seen, mine = earlier(j)
    if not first then
      local h = KEYS[6 + 2 * j]
      redis.call('HSET', h, ARGV[3 + m + j], expiry .. ARGV[3 + 2 * m + j])
      written[h] = true
    end
  end
  if first then
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
for h in pairs(written) do
  -- never shorter: a hash may hold records of a longer window set before
  if redis.call('PEXPIRE', h, ttl, 'GT') == 0 then redis.call('PEXPIRE', h, ttl, 'NX') end
  local sample = redis.call('HRANDFIELD', h, -SAMPLE, 'WITHVALUES')
  local gone = {}
  for s = 1, #sample, 2 do
    if struct.unpack('>I6', sample[s + 1]) <= now then gone[sample[s]] = true end
  end
  local fields = {}
  for f in pairs(gone) do fields[#fields + 1] = f end
  if #fields > 0 then redis.call('HDEL', h, unpack(fields)) end
end
-- One HSET per thousand events instead of one per event (unpack's stack is bounded).
for s = 1, #status, 2000 do
  redis.call('HSET', KEYS[2], unpack(status, s, math.min(s + 1999, #status)))
end
if admission then order_admitted(admission) end
if received > 0 then redis.call('HINCRBY', KEYS[3], 'received', received) end
if duplicates > 0 then redis.call('HINCRBY', KEYS[3], 'duplicates', duplicates) end
return out
