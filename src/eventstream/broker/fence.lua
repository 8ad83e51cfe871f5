-- fence: shared by the scripts that act on a worker's own deliveries (complete,
-- schedule_retry, dead_letter, renew); scripts.py puts it in front of each of them.
--
-- owned(stream, group, consumer, entries) returns a set (entry id -> true) holding
-- each of the given stream entry ids that is still pending for the consumer: the
-- fencing test.
-- An entry another worker has reclaimed, or that is gone, is not in it. It asks with
-- ONE XPENDING over the range of ids the entries span, filtered by consumer, rather
-- than one XPENDING per entry: the reply is bounded by the consumer's own pending
-- entries (at most its concurrency plus one batch), and the cost of a group of
-- outcomes no longer grows with one command per event.
-- chunks(list, size, fn) calls fn(i, j) for each slice list[i..j] of at most size
-- items, so that a variadic command (XACK, XDEL, HDEL, HSET) gets one call per slice:
-- unpack is limited by Lua's stack.
local function entry_id(entry)
  local ms, seq = string.match(entry, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function owned(stream, group, consumer, entries)
  local set = {}
  local lo, hi, lo_ms, lo_seq, hi_ms, hi_seq
  for _, entry in ipairs(entries) do
    local ms, seq = entry_id(entry)
    if ms then
      if not lo or ms < lo_ms or (ms == lo_ms and seq < lo_seq) then lo, lo_ms, lo_seq = entry, ms, seq end
      if not hi or ms > hi_ms or (ms == hi_ms and seq > hi_seq) then hi, hi_ms, hi_seq = entry, ms, seq end
    end
  end
  if not lo then return set end
  -- The set may also name other entries of the consumer inside the range; callers
  -- only ever look up the entries they asked about.
  for _, p in ipairs(redis.call('XPENDING', stream, group, lo, hi, 2147483647, consumer)) do
    set[p[1]] = true
  end
  return set
end

local function chunks(list, size, fn)
  for i = 1, #list, size do
    fn(i, math.min(i + size - 1, #list))
  end
end

