-- complete: record that events were processed (their store rows are already written).
--
-- KEYS[1] stream   KEYS[2] status   KEYS[3] counters   KEYS[4] hist
-- KEYS[5] order    KEYS[6] lines    KEYS[7] parked   KEYS[8] waiting (order.lua)
-- KEYS[9] emits    KEYS[10] outbox
-- ARGV[1] group    ARGV[2] consumer (the worker that ran the handlers)
-- ARGV[3] the handlers' key_concurrency (order_limits)
-- ARGV[4] n        ARGV[5..4+4n] quadruples: stream entry id, event id, 1 when the
--                  handler was skipped because the store already held the event
--                  (a redelivery after a crash between store write and this step),
--                  and the digest of its ordering key ('' when none)
-- ARGV[5+4n]       f, the number of follow-ups the handlers emitted (Event.emit)
-- ARGV[6+4n..]     f quintuples: the 1-based place of its parent among the n events,
--                  follow-up id, envelope, its ordering key's digest ('' when none),
--                  1 when its partition is this one, 0 when it is another
-- ARGV[6+4n+5f..]  histogram increments: field, amount, field, amount, ...
-- Follow-ups       recorded only with their parent's completion (a rejected one records
--                  none): one of this partition is enqueued like ingest enqueues (its
--                  key's line when the key is busy); one of another partition goes to
--                  the outbox, which Broker.relay empties into its partition. The
--                  parents' staged follow-ups ({p}:emits) are dropped.
-- Ordering         each completed event with an ordering key lets the next parked
--                  events of its key into the stream (order_finish).
-- Fencing (fence.lua): an entry no longer pending for this consumer (reclaimed by
-- another worker after its visibility timeout) is left alone and counted as a
-- rejected completion.
-- Returns          a list of n flags: 1 completed, 0 rejected.
-- Counters         processed (+1 per completed), redelivered_skipped (+1 per completed
--                  skip), rejected_completions (+1 per rejected), released (+1 per
--                  parked event let into the stream), emitted (+1 per follow-up
--                  recorded), received (+1 per follow-up enqueued here), parked (+1
--                  per follow-up parked behind its key)
local group, consumer = ARGV[1], ARGV[2]
local n = tonumber(ARGV[4])
local asked = {}
for i = 0, n - 1 do asked[#asked + 1] = ARGV[5 + 4 * i] end
local mine = owned(KEYS[1], group, consumer, asked)
local out, entries, ids, finished, completed = {}, {}, {}, {}, {}
local rejected, skipped = 0, 0
for i = 0, n - 1 do
  local b = 5 + 4 * i
  local entry, id, skip, kd = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  if mine[entry] then
    mine[entry] = nil -- an entry named twice completes once
    entries[#entries + 1] = entry
    ids[#ids + 1] = id
    out[#out + 1] = 1
    completed[i + 1] = true
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
  redis.call('HDEL', KEYS[9], unpack(ids, i, j))
end)
-- after the XDELs: a released event's status must not be taken for a finished one's
local o = order_keys(5, ARGV[3])
order_finish(o, finished)
local f = tonumber(ARGV[5 + 4 * n])
if f > 0 then
  local admission, status, outbox = nil, {}, {}
  local recorded, enqueued = 0, 0
  for j = 0, f - 1 do
    local b = 6 + 4 * n + 5 * j
    if completed[tonumber(ARGV[b])] then
      local id, env, kd = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
      recorded = recorded + 1
      if ARGV[b + 4] == '1' then
        status[#status + 1] = id
        if kd ~= '' then
          admission = admission or order_admission(o, order_now())
          status[#status + 1] = order_admit(admission, kd, id, env)
        else
          status[#status + 1] = 'q:' .. redis.call('XADD', KEYS[1], '*', 'id', id, 'e', env)
        end
        enqueued = enqueued + 1
      else
        outbox[#outbox + 1] = id
        outbox[#outbox + 1] = env
      end
    end
  end
  order_each('HSET', KEYS[2], status)
  order_each('HSET', KEYS[10], outbox)
  if admission then order_admitted(admission) end
  if recorded > 0 then redis.call('HINCRBY', KEYS[3], 'emitted', recorded) end
  if enqueued > 0 then redis.call('HINCRBY', KEYS[3], 'received', enqueued) end
end
local done = #entries
if done > 0 then
  redis.call('HINCRBY', KEYS[3], 'processed', done)
  if skipped > 0 then redis.call('HINCRBY', KEYS[3], 'redelivered_skipped', skipped) end
  for j = 6 + 4 * n + 5 * f, #ARGV, 2 do
    redis.call('HINCRBY', KEYS[4], ARGV[j], ARGV[j + 1])
  end
end
if rejected > 0 then redis.call('HINCRBY', KEYS[3], 'rejected_completions', rejected) end
return out
