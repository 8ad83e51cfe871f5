-- schedule_retry: move failed events from the stream to the retry set.
--
-- KEYS[1] stream   KEYS[2] status   KEYS[3] counters   KEYS[4] retry   KEYS[5] retry body
-- ARGV[1] group    ARGV[2] consumer
-- ARGV[3] n        ARGV[4+5i..] for event i: stream entry id, event id, due time (ms),
--                  attempts made so far, first failure time (ms)
-- ARGV[4+5n..]     the n envelopes, in the same order
-- Fencing as in complete.lua: only entries still pending for this consumer move.
-- Returns          a list of n flags: 1 scheduled, 0 rejected.
-- Counters         failed and retried (+1 each per scheduled event),
--                  rejected_completions (+1 per rejected)
local group, consumer = ARGV[1], ARGV[2]
local n = tonumber(ARGV[3])
local out = {}
local moved, rejected = 0, 0
for i = 0, n - 1 do
  local b = 4 + 5 * i
  local entry, id, due, attempts, first = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local owned = redis.call('XPENDING', KEYS[1], group, entry, entry, 1, consumer)
  if #owned == 1 then
    redis.call('XACK', KEYS[1], group, entry)
    redis.call('XDEL', KEYS[1], entry)
    redis.call('ZADD', KEYS[4], due, id)
    redis.call('HSET', KEYS[5], id, ARGV[4 + 5 * n + i])
    redis.call('HSET', KEYS[2], id, 'r:' .. attempts .. ':' .. first)
    out[#out + 1] = 1
    moved = moved + 1
  else
    out[#out + 1] = 0
    rejected = rejected + 1
  end
end
if moved > 0 then
  redis.call('HINCRBY', KEYS[3], 'failed', moved)
  redis.call('HINCRBY', KEYS[3], 'retried', moved)
end
if rejected > 0 then redis.call('HINCRBY', KEYS[3], 'rejected_completions', rejected) end
return out
