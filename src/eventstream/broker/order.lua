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
-- score 0, so that they sort by name: "<kd>:<seq>:<ms>:<event id>", seq (16 digits)
-- the partition's parked counter when the event was parked, ms the time it was. A key's first waiting event is
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
  redis.call('ZADD', o.lines, 0, kd .. ':' .. string.format('%016d', seq) .. ':' .. now .. ':' .. id)
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

-- The first two of key kd's line: { member, ms parked, event id } each.
local function order_heads(o, kd)
  local out = {}
  for _, m in ipairs(redis.call('ZRANGEBYLEX', o.lines, '[' .. kd .. ':', '(' .. kd .. ';', 'LIMIT', 0, 2)) do
    local ms, id = string.match(m, '^%x+:%d+:(%d+):(.+)$')
    out[#out + 1] = { m, ms, id }
  end
  return out
end

-- One released event of key kd has finished (processed or dead): release the next
-- parked ones while the key has room. Returns how many were released. With every K
-- 1 (the usual case) that is at most one, found by one read of the line's first two
-- (the second's time is the key's wait from now on) and with no body read but the
-- released event's.
local function order_finish(o, kd)
  local was = tonumber(redis.call('HGET', o.order, kd)) or 1
  local active = was - 1
  local released, popped = 0, 0
  local heads, i = order_heads(o, kd), 1
  while heads[i] do
    if not o.limits and active >= 1 then break end
    local member, id = heads[i][1], heads[i][3]
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
    i = i + 1
    if i > 2 then heads, i = order_heads(o, kd), 1 end -- both gone: the next two
  end
  if popped > 0 then
    if heads[i] then
      redis.call('ZADD', o.waiting, heads[i][2], kd)
    else
      redis.call('ZREM', o.waiting, kd)
    end
  end
  if active <= 0 then
    redis.call('HDEL', o.order, kd)
  elseif active ~= was then
    redis.call('HSET', o.order, kd, active)
  end
  return released
end

-- The limits argument of complete, dead_letter and reclaim: '' (every K is 1) or a
-- JSON object type -> K ('*': the K of the types not named).
local function order_limits(arg)
  if arg == '' then return nil end
  return cjson.decode(arg)
end
