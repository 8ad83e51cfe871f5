-- reclaim: take over entries whose worker stopped renewing its lease (crashed, hung
-- or cut off) and dead-letter those that have already been delivered too often.
--
-- KEYS[1] stream   KEYS[2] status   KEYS[3] counters   KEYS[4] dlq
-- KEYS[5] order    KEYS[6] lines    KEYS[7] parked   KEYS[8] waiting (order.lua)
-- KEYS[9] emits    (a dead-lettered event's staged follow-ups are dropped)
-- ARGV[1] group    ARGV[2] consumer (the live worker taking over)
-- ARGV[3] visibility timeout (ms): an entry idle this long has an expired lease
-- ARGV[4] the most entries to look at in one call
-- ARGV[5] max deliveries: an entry delivered this many times without a recorded
--         outcome goes to the DLQ instead of being delivered again
-- ARGV[6] now (ms)
-- ARGV[7] the handlers' key_concurrency (order_limits)
-- Ordering         a claimed entry keeps its key busy (its later events stay parked,
--                  so it runs again before them); a dead-lettered one with an ordering
--                  key lets the next of its key in (order_finish).
-- Returns          { claimed, dead } where claimed is a list of {entry id, fields}
--                  now pending for ARGV[2], and dead a list of {event id, type,
--                  attempts} of the events dead-lettered.
-- Counters         reclaimed (+1 per claimed), dead_lettered (+1 per dead), released
--                  (+1 per parked event let into the stream)
local group, consumer, idle, now = ARGV[1], ARGV[2], ARGV[3], ARGV[6]
local o = order_keys(5, ARGV[7])
local finished = {}
local max_deliveries = tonumber(ARGV[5])
local pending = redis.call('XPENDING', KEYS[1], group, 'IDLE', idle, '-', '+', tonumber(ARGV[4]))
local claimed, dead = {}, {}

local function field(fields, name)
  for j = 1, #fields, 2 do
    if fields[j] == name then return fields[j + 1] end
  end
  return ''
end

-- The caller's own entries are taken too: a live worker renews the entries it is
-- handling every third of the timeout, so an own entry idle this long is one it does
-- not know about (the reply to its XREADGROUP was lost: connection cut, Redis
-- restarted); left alone it would stay pending for good when no other worker runs.
for _, p in ipairs(pending) do
  local entry, deliveries = p[1], tonumber(p[4])
  do
    local got = redis.call('XCLAIM', KEYS[1], group, consumer, idle, entry)
    local item = got[1]
    if item and item[2] then
      local fields = item[2]
      if deliveries >= max_deliveries then
        local id = field(fields, 'id')
        local env = field(fields, 'e')
        local attempts = (tonumber(field(fields, 'a')) or 0) + deliveries
        local first = field(fields, 'f')
        if first == '' then first = now end
        local ok, decoded = pcall(cjson.decode, env)
        -- only a string type: cjson.null, a table or a boolean would make XADD fail
        -- after the XDEL below, losing the event
        local t = ''
        if ok and type(decoded) == 'table' and type(decoded['type']) == 'string' then t = decoded['type'] end
        redis.call('XACK', KEYS[1], group, entry)
        redis.call('XDEL', KEYS[1], entry)
        local kd = field(fields, 'k')
        local record = { KEYS[4], '*', 'id', id, 't', t, 'e', env, 'a', tostring(attempts),
          'reason', 'WorkerLost: delivered ' .. deliveries ..
            ' times and no worker recorded an outcome (crashed, killed or past the visibility timeout each time)',
          'tb', '', 'ff', first, 'lf', now }
        if kd ~= '' then
          record[#record + 1] = 'k'
          record[#record + 1] = kd
        end
        local d = redis.call('XADD', unpack(record))
        redis.call('HSET', KEYS[2], id, 'd:' .. d)
        redis.call('HDEL', KEYS[9], id)
        if kd ~= '' then finished[#finished + 1] = kd end
        dead[#dead + 1] = { id, t, tostring(attempts) }
      else
        claimed[#claimed + 1] = item
      end
    elseif item then
      -- the entry was deleted while still pending: nothing left to run
      redis.call('XACK', KEYS[1], group, entry)
    end
  end
end
if #claimed > 0 then redis.call('HINCRBY', KEYS[3], 'reclaimed', #claimed) end
if #dead > 0 then redis.call('HINCRBY', KEYS[3], 'dead_lettered', #dead) end
order_finish(o, finished)
return { claimed, dead }
