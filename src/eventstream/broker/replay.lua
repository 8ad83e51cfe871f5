-- replay: send dead events back to the stream, same id, attempts counted afresh.
--
-- KEYS[1] stream   KEYS[2] status   KEYS[3] counters   KEYS[4] dlq
-- KEYS[5] order    KEYS[6] lines    KEYS[7] parked   KEYS[8] waiting (order.lua)
-- ARGV[1..]        DLQ entry ids
-- Each event leaves the DLQ and enters the stream in one step; one with an ordering
-- key (field k) joins the back of its key's line (order_admit).
-- Returns          the event ids replayed (entries already gone are skipped).
-- Counters         replayed (+1 per event), parked (+1 per event parked behind its key)
local o = order_keys(5)
local admission = nil
local out = {}
for i = 1, #ARGV do
  local found = redis.call('XRANGE', KEYS[4], ARGV[i], ARGV[i])
  if #found == 1 then
    local fields = found[1][2]
    local id, env, kd = '', '', ''
    for j = 1, #fields, 2 do
      local name = fields[j]
      if name == 'id' then id = fields[j + 1] elseif name == 'e' then env = fields[j + 1]
      elseif name == 'k' then kd = fields[j + 1] end
    end
    redis.call('XDEL', KEYS[4], ARGV[i])
    if kd ~= '' then
      admission = admission or order_admission(o, order_now())
      redis.call('HSET', KEYS[2], id, order_admit(admission, kd, id, env))
    else
      local entry = redis.call('XADD', KEYS[1], '*', 'id', id, 'e', env)  -- fresh: no attempt fields
      redis.call('HSET', KEYS[2], id, 'q:' .. entry)
    end
    out[#out + 1] = id
  end
end
if admission then order_admitted(admission) end
if #out > 0 then redis.call('HINCRBY', KEYS[3], 'replayed', #out) end
return out
