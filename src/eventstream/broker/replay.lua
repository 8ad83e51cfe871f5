-- replay: send dead events back to the stream, same id, attempts counted afresh.
--
-- KEYS[1] stream   KEYS[2] status   KEYS[3] counters   KEYS[4] dlq
-- ARGV[1..]        DLQ entry ids
-- Each event leaves the DLQ and enters the stream in one step.
-- Returns          the event ids replayed (entries already gone are skipped).
-- Counters         replayed (+1 per event)
local out = {}
for i = 1, #ARGV do
  local found = redis.call('XRANGE', KEYS[4], ARGV[i], ARGV[i])
  if #found == 1 then
    local fields = found[1][2]
    local id, env = '', ''
    for j = 1, #fields, 2 do
      if fields[j] == 'id' then id = fields[j + 1] elseif fields[j] == 'e' then env = fields[j + 1] end
    end
    redis.call('XDEL', KEYS[4], ARGV[i])
    local entry = redis.call('XADD', KEYS[1], '*', 'id', id, 'e', env)  -- fresh: no attempt fields
    redis.call('HSET', KEYS[2], id, 'q:' .. entry)
    out[#out + 1] = id
  end
end
if #out > 0 then redis.call('HINCRBY', KEYS[3], 'replayed', #out) end
return out
