-- order: shared by the scripts that admit, finish or release events that carry an
-- ordering key (ingest, replay, complete, dead_letter, reclaim); scripts.py puts it in
-- front of each of them.
--
-- A key is named by its digest kd (keys.order_digest). Its events are "released" (in
-- the stream, queued or in flight, or in the retry set) at most K at a time, K being
-- the key_concurrency of the handler of the event to release; the others are parked in
-- the key's line, in acceptance order, and the step that finishes one of its released
-- events (complete, dead_letter, reclaim's dead-lettering) releases the next ones in
-- the same step. No event waits by polling, and keys never wait for each other.
--
-- o is a table naming the partition's keys: stream, status, counters, order, lines,
-- parked, waiting (keys.py), and limits: nil when every K is 1, else a table type -> K
-- with the K of types not named under '*' (absent: 1).
--
-- Every key's line is in one sorted set of the partition ({p}:lines), all members at
-- score 0, so that they sort by name: "<kd>:<seq>:<event id>", seq (16 digits) the
-- partition's parked counter when the event was parked. A key's first waiting event is
-- the first member of the lexicographic range "<kd>:" .. "<kd>;". The set's name is
-- fixed, so every script declares every key it touches (a slot that is moving between
-- nodes refuses the whole call instead of failing it halfway).
--
-- Invariant: a key has parked events only while it has released ones, so an event of
-- an idle key is released at once and a busy key's newcomers queue behind its line.
-- Ingest and replay do not know the handlers' K: they release an event only when its
-- key is idle; a K above 1 fills up as the key's released events finish.

local function order_now()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end

-- Release an event (a fresh delivery: no attempt fields); its new status field.
local function order_xadd(o, kd, id, env)
  return 'q:' .. redis.call('XADD', o.stream, '*', 'id', id, 'e', env, 'k', kd)
end

-- An event of key kd comes in (ingest, replay): released when the key is idle, else
-- parked at the back of its line. Returns its status field value, and true when parked.
-- Counters: parked (+1 per event parked).
local function order_admit(o, kd, id, env, now)
  if redis.call('HSETNX', o.order, kd, 1) == 1 then
    return order_xadd(o, kd, id, env), false
  end
  local seq = redis.call('HINCRBY', o.counters, 'parked', 1)
  redis.call('ZADD', o.lines, 0, kd .. ':' .. string.format('%016d', seq) .. ':' .. id)
  redis.call('ZADD', o.waiting, 'NX', now, kd) -- the line's first keeps its time
  redis.call('HSET', o.parked, id, now .. ':' .. env)
  return 'k:' .. kd, true
end

local function order_limit(o, env)
  if not o.limits then return 1 end
  local ok, decoded = pcall(cjson.decode, env)
  local t = ok and type(decoded) == 'table' and decoded['type']
  return tonumber(type(t) == 'string' and o.limits[t] or o.limits['*']) or 1
end

local function order_head(o, kd)
  local first = redis.call('ZRANGEBYLEX', o.lines, '[' .. kd .. ':', '(' .. kd .. ';', 'LIMIT', 0, 1)[1]
  if not first then return nil, nil end
  return first, string.sub(first, #kd + 19) -- after "<kd>:<16 digits>:"
end

-- One released event of key kd has finished (processed or dead): release the next
-- parked ones while the key has room. Returns how many were released.
local function order_finish(o, kd)
  local active = (tonumber(redis.call('HGET', o.order, kd)) or 1) - 1
  local released, popped = 0, 0
  while true do
    local member, id = order_head(o, kd)
    if not member then break end
    local body = redis.call('HGET', o.parked, id)
    if body then
      local env = string.sub(body, (string.find(body, ':', 1, true) or 0) + 1)
      if active >= order_limit(o, env) then break end
      redis.call('HSET', o.status, id, order_xadd(o, kd, id, env))
      redis.call('HDEL', o.parked, id)
      active = active + 1
      released = released + 1
    end
    redis.call('ZREM', o.lines, member)
    popped = popped + 1
  end
  if popped > 0 then
    local _, head = order_head(o, kd)
    local body = head and redis.call('HGET', o.parked, head)
    if body then
      redis.call('ZADD', o.waiting, tonumber(string.match(body, '^(%d+):')) or 0, kd)
    else
      redis.call('ZREM', o.waiting, kd)
    end
  end
  if active > 0 then
    redis.call('HSET', o.order, kd, active)
  else
    redis.call('HDEL', o.order, kd)
  end
  return released
end

-- The limits argument of complete, dead_letter and reclaim: '' (every K is 1) or a
-- JSON object type -> K ('*': the K of the types not named).
local function order_limits(arg)
  if arg == '' then return nil end
  return cjson.decode(arg)
end
