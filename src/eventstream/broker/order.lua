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
-- with the K of types not named under '*' (absent: 1). order_keys(at, limits) makes it
-- for a script whose KEYS are stream, status, counters first and order, lines, parked,
-- waiting from KEYS[at] (keys.Keys.ordering).
--
-- A busy key's field in {p}:order is "<active>" (released events) or, while events
-- wait, "<active>:<head>:<tail>": its line holds the places head..tail, each a field
-- "<kd>:<place>" of {p}:lines -> "<ms parked>:<event id>"; the event's envelope is in
-- {p}:parked. Every name is fixed or a field, so every script declares every key it
-- touches (a slot moving between nodes refuses a call whole instead of failing it
-- halfway), and each step is a few hash reads and writes, batched over all the keys
-- of a call: one command per kind, plus one XADD per released event.
--
-- Invariant: a key has parked events only while it has released ones, so an event of
-- an idle key is released at once and a busy key's newcomers queue behind its line.
-- Ingest and replay do not know the handlers' K: they release an event only when its
-- key is idle; a K above 1 fills up as the key's released events finish.

-- The limits argument of complete, dead_letter and reclaim: '' (every K is 1) or a
-- JSON object type -> K ('*': the K of the types not named).
local function order_limits(arg)
  if arg == '' then return nil end
  return cjson.decode(arg)
end

local function order_keys(at, limits)
  return { stream = KEYS[1], status = KEYS[2], counters = KEYS[3], order = KEYS[at], lines = KEYS[at + 1],
    parked = KEYS[at + 2], waiting = KEYS[at + 3], limits = order_limits(limits or '') }
end

local function order_now()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end

-- A key's field of {p}:order: released events, and its line's first and last places
-- (an empty line: 1, 0).
local function order_parse(value)
  if not value then return 0, 1, 0 end
  local active, head, tail = string.match(value, '^(%d+):(%d+):(%d+)$')
  if active then return tonumber(active), tonumber(head), tonumber(tail) end
  return tonumber(value) or 0, 1, 0
end

local function order_value(active, head, tail)
  if head > tail then return tostring(active) end
  return active .. ':' .. head .. ':' .. tail
end

-- Release an event (a fresh delivery: no attempt fields); its new status field.
local function order_xadd(o, kd, id, env)
  return 'q:' .. redis.call('XADD', o.stream, '*', 'id', id, 'e', env, 'k', kd)
end

-- A variadic command over a list of arguments, 1000 at a time (Lua's stack is bounded).
local function order_each(command, key, list)
  for i = 1, #list, 1000 do
    redis.call(command, key, unpack(list, i, math.min(i + 999, #list)))
  end
end

-- Admitting events (ingest, replay) goes in three steps: a = order_admission(o, now);
-- order_admit(a, kd, id, env) per event, in acceptance order, which returns its status
-- field value (queued at once when its key is idle, else parked at the back of its
-- line); order_admitted(a) writes the keys, lines and bodies, one command per kind.
-- Counters: parked (+1 per event parked).
local function order_admission(o, now)
  return { o = o, now = now, keys = {}, touched = {}, count = 0, places = {}, bodies = {}, waits = {} }
end

local function order_admit(a, kd, id, env)
  local k = a.keys[kd]
  if not k then
    local active, head, tail = order_parse(redis.call('HGET', a.o.order, kd))
    k = { active = active, head = head, tail = tail }
    a.keys[kd] = k
    a.touched[#a.touched + 1] = kd
  end
  if k.active == 0 then -- idle: no line either
    k.active = 1
    return order_xadd(a.o, kd, id, env)
  end
  k.tail = k.tail + 1
  if k.tail == k.head then -- the line starts with it
    a.waits[#a.waits + 1] = a.now
    a.waits[#a.waits + 1] = kd
  end
  a.count = a.count + 1
  a.places[#a.places + 1] = kd .. ':' .. k.tail
  a.places[#a.places + 1] = a.now .. ':' .. id
  a.bodies[#a.bodies + 1] = id
  a.bodies[#a.bodies + 1] = a.now .. ':' .. env
  return 'k:' .. kd
end

local function order_admitted(a)
  local o, values = a.o, {}
  for _, kd in ipairs(a.touched) do
    local k = a.keys[kd]
    values[#values + 1] = kd
    values[#values + 1] = order_value(k.active, k.head, k.tail)
  end
  order_each('HSET', o.order, values)
  if a.count == 0 then return end
  order_each('HSET', o.lines, a.places)
  order_each('HSET', o.parked, a.bodies)
  order_each('ZADD', o.waiting, a.waits)
  redis.call('HINCRBY', o.counters, 'parked', a.count)
end

local function order_limit(o, env)
  if not o.limits then return 1 end
  local ok, decoded = pcall(cjson.decode, env)
  local t = ok and type(decoded) == 'table' and decoded['type']
  return tonumber(type(t) == 'string' and o.limits[t] or o.limits['*']) or 1
end

-- HMGET of many fields, 1000 at a time: the values, in order.
local function order_hmget(key, fields)
  local out = {}
  for i = 1, #fields, 1000 do
    local got = redis.call('HMGET', key, unpack(fields, i, math.min(i + 999, #fields)))
    for j = 1, #got do out[i + j - 1] = got[j] end
  end
  return out
end

-- Released events have finished (processed or dead): kds holds the key digest of each
-- (a key once per finished event). For each key, release the next parked events while
-- the key has room: with every K 1, the first of its line, and the second's time is
-- the key's wait from now on. Counters: released (+1 per event let into the stream).
local function order_finish(o, kds)
  if #kds == 0 then return end
  local keys, finished = {}, {}
  for _, kd in ipairs(kds) do
    if not finished[kd] then
      finished[kd] = 0
      keys[#keys + 1] = kd
    end
    finished[kd] = finished[kd] + 1
  end
  local most = 1 -- the largest K: no key takes more at once
  if o.limits then
    for _, k in pairs(o.limits) do most = math.max(most, tonumber(k) or 1) end
  end
  -- each key's count and line; the places to look at: up to its room, and one more
  local plans, places = {}, {}
  for i, value in ipairs(order_hmget(o.order, keys)) do
    local was, head, tail = order_parse(value)
    if not value then was = finished[keys[i]] end
    local plan = { kd = keys[i], value = value, active = was - finished[keys[i]], head = head, tail = tail }
    plan.stop = math.min(tail, head + most - plan.active - 1) -- the places it may release
    plan.last = math.min(tail, plan.stop + 1) -- and the one after: the next first
    plan.at = #places
    for place = head, plan.last do places[#places + 1] = plan.kd .. ':' .. place end
    plans[#plans + 1] = plan
  end
  local entries = order_hmget(o.lines, places)
  local ids = {}
  for n, entry in ipairs(entries) do
    if entry then ids[n] = string.sub(entry, (string.find(entry, ':', 1, true) or 0) + 1) end
  end
  local wanted = {} -- the bodies of the places within each key's room (not the one more)
  for _, plan in ipairs(plans) do
    for place = plan.head, plan.stop do
      local id = ids[plan.at + place - plan.head + 1]
      if id then wanted[#wanted + 1] = id end
    end
  end
  local bodies = {}
  for n, body in ipairs(order_hmget(o.parked, wanted)) do
    if body then bodies[wanted[n]] = body end
  end
  local status, gone, left, waits, idle, drop, keep = {}, {}, {}, {}, {}, {}, {}
  local released = 0
  for _, plan in ipairs(plans) do
    local active, place = plan.active, plan.head
    while place <= plan.stop do
      local n = plan.at + place - plan.head + 1
      local id = ids[n]
      local body = id and bodies[id]
      if body then
        local env = string.sub(body, (string.find(body, ':', 1, true) or 0) + 1)
        if active >= order_limit(o, env) then break end
        status[#status + 1] = id
        status[#status + 1] = order_xadd(o, plan.kd, id, env)
        gone[#gone + 1] = id
        active = active + 1
        released = released + 1
      end
      left[#left + 1] = places[n]
      place = place + 1
    end
    local head, tail = place, plan.tail
    if head > plan.head then -- its line's first changed
      if head > tail then
        idle[#idle + 1] = plan.kd
        head, tail = 1, 0
      else
        local entry = entries[plan.at + head - plan.head + 1]
        waits[#waits + 1] = entry and tonumber(string.match(entry, '^(%d+):')) or 0
        waits[#waits + 1] = plan.kd
      end
    end
    if active <= 0 and head > tail then
      drop[#drop + 1] = plan.kd
    else
      local value = order_value(math.max(active, 0), head, tail)
      if value ~= plan.value then
        keep[#keep + 1] = plan.kd
        keep[#keep + 1] = value
      end
    end
  end
  order_each('HSET', o.status, status)
  order_each('HDEL', o.parked, gone)
  order_each('HDEL', o.lines, left)
  order_each('ZADD', o.waiting, waits)
  order_each('ZREM', o.waiting, idle)
  order_each('HDEL', o.order, drop)
  order_each('HSET', o.order, keep)
  if released > 0 then redis.call('HINCRBY', o.counters, 'released', released) end
end
