-- complete: record that events were processed (their store rows are already written).
--
-- KEYS[1] stream   KEYS[2] status   KEYS[3] counters   KEYS[4] hist
-- KEYS[5] order    KEYS[6] lines    KEYS[7] parked   KEYS[8] waiting (order.lua)
-- ARGV[1] group    ARGV[2] consumer (the worker that ran the handlers)
-- ARGV[3] the handlers' key_concurrency (order_limits)
-- ARGV[4] n        ARGV[5..4+4n] quadruples: stream entry id, event id, 1 when the
--                  handler was skipped because the store already held the event
--                  (a redelivery after a crash between store write and this step),
--                  and the digest of its ordering key ('' when none)
-- ARGV[5+4n..]     histogram increments: field, amount, field, amount, ...
-- Ordering         each completed event with an ordering key lets the next parked
--                  events of its key into the stream (order_finish).
-- Fencing (fence.lua): an entry no longer pending for this consumer (reclaimed by
-- another worker after its visibility timeout) is left alone and counted as a
-- rejected completion.
-- Returns          a list of n flags: 1 completed, 0 rejected.
-- Counters         processed (+1 per completed), redelivered_skipped (+1 per completed
--                  skip), rejected_completions (+1 per rejected), released (+1 per
--                  parked event let into the stream)
local group, consumer = ARGV[1], ARGV[2]
local n = tonumber(ARGV[4])
local asked = {}
for i = 0, n - 1 do asked[#asked + 1] = ARGV[5 + 4 * i] end
local mine = owned(KEYS[1], group, consumer, asked)
local out, entries, ids, finished = {}, {}, {}, {}
local rejected, skipped = 0, 0
for i = 0, n - 1 do
  local b = 5 + 4 * i
  local entry, id, skip, kd = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  if mine[entry] then
    mine[entry] = nil -- an entry named twice completes once
    entries[#entries + 1] = entry
    ids[#ids + 1] = id
    out[#out + 1] = 1
    if skip == '1' then skipped = skipped + 1 end
    if kd ~= '' then finished[#finished + 1] = kd end
  else
    out[#out + 1] = 0
    rejected = rejected + 1
  end
end
chunks(entries, 1000, function(i, j)
  redis.call('XACK', KEYS[1], group, unpack(entries, i, j))
  redis.call('XDEL', KEYS[1], unpack(entries, i, j))
  redis.call('HDEL', KEYS[2], unpack(ids, i, j))
end)
-- after the XDELs: a released event's status must not be taken for a finished one's
order_finish(order_keys(5, ARGV[3]), finished)
local done = #entries
if done > 0 then
  redis.call('HINCRBY', KEYS[3], 'processed', done)
  if skipped > 0 then redis.call('HINCRBY', KEYS[3], 'redelivered_skipped', skipped) end
  for j = 5 + 4 * n, #ARGV, 2 do
    redis.call('HINCRBY', KEYS[4], ARGV[j], ARGV[j + 1])
  end
end
if rejected > 0 then redis.call('HINCRBY', KEYS[3], 'rejected_completions', rejected) end
return out
