-- schedule_retry: move failed events from the stream to the retry set.
--
-- KEYS[1] stream   KEYS[2] status   KEYS[3] counters   KEYS[4] retry   KEYS[5] retry body
-- KEYS[6] retry error
-- ARGV[1] group    ARGV[2] consumer
-- ARGV[3] n        ARGV[4+6i..] for event i: stream entry id, event id, due time (ms),
--                  attempts made so far, first failure time (ms), the digest of its
--                  ordering key ('' when none)
-- ARGV[4+6n..]     the n envelopes, in the same order
-- ARGV[4+7n..]     the n failures ("Type: message"), in the same order; '' records none
-- Ordering         an event waiting for its retry keeps its key busy: the digest goes
--                  into its status field ("r:<attempts>:<first>:<digest>"), and
--                  promote.lua puts it back on the stream entry.
-- Fencing as in complete.lua: only entries still pending for this consumer move.
-- Returns          a list of n flags: 1 scheduled, 0 rejected.
-- Counters         failed and retried (+1 each per scheduled event),
--                  rejected_completions (+1 per rejected)
local group, consumer = ARGV[1], ARGV[2]
local n = tonumber(ARGV[3])
local asked = {}
for i = 0, n - 1 do asked[#asked + 1] = ARGV[4 + 6 * i] end
local mine = owned(KEYS[1], group, consumer, asked)
local out, entries, due, bodies, status, errors = {}, {}, {}, {}, {}, {}
local rejected = 0
for i = 0, n - 1 do
  local b = 4 + 6 * i
  local entry, id = ARGV[b], ARGV[b + 1]
  if mine[entry] then
    mine[entry] = nil
    entries[#entries + 1] = entry
    due[#due + 1] = ARGV[b + 2]
    due[#due + 1] = id
    bodies[#bodies + 1] = id
    bodies[#bodies + 1] = ARGV[4 + 6 * n + i]
    local reason = ARGV[4 + 7 * n + i]
    if reason and reason ~= '' then
      errors[#errors + 1] = id
      errors[#errors + 1] = reason
    end
    status[#status + 1] = id
    local kd = ARGV[b + 5]
    status[#status + 1] = 'r:' .. ARGV[b + 3] .. ':' .. ARGV[b + 4] .. (kd ~= '' and ':' .. kd or '')
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
    rejected = rejected + 1
  end
end
chunks(entries, 1000, function(i, j)
  redis.call('XACK', KEYS[1], group, unpack(entries, i, j))
  redis.call('XDEL', KEYS[1], unpack(entries, i, j))
  redis.call('ZADD', KEYS[4], unpack(due, 2 * i - 1, 2 * j))
  redis.call('HSET', KEYS[5], unpack(bodies, 2 * i - 1, 2 * j))
  redis.call('HSET', KEYS[2], unpack(status, 2 * i - 1, 2 * j))
end)
chunks(errors, 2000, function(i, j) redis.call('HSET', KEYS[6], unpack(errors, i, j)) end)
local moved = #entries
if moved > 0 then
  redis.call('HINCRBY', KEYS[3], 'failed', moved)
  redis.call('HINCRBY', KEYS[3], 'retried', moved)
end
if rejected > 0 then redis.call('HINCRBY', KEYS[3], 'rejected_completions', rejected) end
return out
