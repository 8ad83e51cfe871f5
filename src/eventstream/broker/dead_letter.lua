-- dead_letter: move events that will not be tried again from the stream to the DLQ.
--
-- KEYS[1] stream   KEYS[2] status   KEYS[3] counters   KEYS[4] dlq
-- KEYS[5] order    KEYS[6] lines    KEYS[7] parked   KEYS[8] waiting (order.lua)
-- KEYS[9] emits    (a dead event emits nothing: its staged follow-ups are dropped)
-- ARGV[1] group    ARGV[2] consumer
-- ARGV[3] the handlers' key_concurrency (order_limits)
-- ARGV[4] n        ARGV[5+11i..] for event i: stream entry id, event id, type, envelope,
--                  attempts, reason, traceback, first failure (ms), last failure (ms),
--                  1 when a handler ran and failed (0: no handler, malformed event),
--                  the digest of its ordering key ('' when none)
-- Ordering         a dead event with an ordering key lets the next parked events of
--                  its key into the stream (order_finish); its DLQ entry keeps the
--                  digest (field k), so that a replay joins the back of its key's line.
-- Fencing as in complete.lua: only entries still pending for this consumer move.
-- Returns          a list of n flags: 1 dead-lettered, 0 rejected.
-- Counters         dead_lettered (+1 per moved event), failed (+1 per moved event
--                  whose handler ran),
--                  rejected_completions (+1 per rejected), released (+1 per parked
--                  event let into the stream)
local group, consumer = ARGV[1], ARGV[2]
local n = tonumber(ARGV[4])
local asked = {}
for i = 0, n - 1 do asked[#asked + 1] = ARGV[5 + 11 * i] end
local mine = owned(KEYS[1], group, consumer, asked)
local out, entries, ids, status, finished = {}, {}, {}, {}, {}
local rejected, failed = 0, 0
for i = 0, n - 1 do
  local b = 5 + 11 * i
  local entry, id, kd = ARGV[b], ARGV[b + 1], ARGV[b + 10]
  if mine[entry] then
    mine[entry] = nil
    entries[#entries + 1] = entry
    ids[#ids + 1] = id
    local record = { KEYS[4], '*', 'id', id, 't', ARGV[b + 2], 'e', ARGV[b + 3],
      'a', ARGV[b + 4], 'reason', ARGV[b + 5], 'tb', ARGV[b + 6], 'ff', ARGV[b + 7], 'lf', ARGV[b + 8] }
    if kd ~= '' then
      finished[#finished + 1] = kd
      record[#record + 1] = 'k'
      record[#record + 1] = kd
    end
    local dead = redis.call('XADD', unpack(record))
    status[#status + 1] = id
    status[#status + 1] = 'd:' .. dead
    out[#out + 1] = 1
    if ARGV[b + 9] == '1' then failed = failed + 1 end
  else
    out[#out + 1] = 0
    rejected = rejected + 1
  end
end
chunks(entries, 1000, function(i, j)
  redis.call('XACK', KEYS[1], group, unpack(entries, i, j))
  redis.call('XDEL', KEYS[1], unpack(entries, i, j))
  redis.call('HSET', KEYS[2], unpack(status, 2 * i - 1, 2 * j))
  redis.call('HDEL', KEYS[9], unpack(ids, i, j))
end)
order_finish(order_keys(5, ARGV[3]), finished)
local moved = #entries
if moved > 0 then
  redis.call('HINCRBY', KEYS[3], 'dead_lettered', moved)
  if failed > 0 then redis.call('HINCRBY', KEYS[3], 'failed', failed) end
end
if rejected > 0 then redis.call('HINCRBY', KEYS[3], 'rejected_completions', rejected) end
return out
