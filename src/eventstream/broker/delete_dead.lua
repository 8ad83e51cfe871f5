-- delete_dead: remove dead events from the DLQ for good.
--
-- KEYS[1] status   KEYS[2] counters   KEYS[3] dlq
-- ARGV[1..]        pairs: DLQ entry id, event id
-- Returns          the event ids deleted (entries already gone are skipped).
-- Counters         deleted (+1 per event)
local out = {}
for i = 1, #ARGV, 2 do
  if redis.call('XDEL', KEYS[3], ARGV[i]) == 1 then
    redis.call('HDEL', KEYS[1], ARGV[i + 1])
    out[#out + 1] = ARGV[i + 1]
  end
end
if #out > 0 then redis.call('HINCRBY', KEYS[2], 'deleted', #out) end
return out
