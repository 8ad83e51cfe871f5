-- count_dead: count the DLQ entries that match a filter, one bounded slice at a time
-- (it only reads, and never more than ARGV[3] entries, so no call holds the server long).
--
-- KEYS[1] dlq
-- ARGV[1] start: the first entry id to examine, or '(' and an id to start after it
-- ARGV[2] end: the last entry id to examine (inclusive)
-- ARGV[3] n: entries to examine at most
-- ARGV[4] type ('' any)
-- ARGV[5] text the reason contains ('' any), ignoring case: both are put in lower
--         case, where only the ASCII letters A-Z change (the server's C locale;
--         eventstream.replay.dead.fold does the same)
-- ARGV[6] since: the last failure (field lf, ms) at or after it ('' any)
-- ARGV[7] until: the last failure before it ('' any)
-- ARGV[8] how many of the first matching entries to name
-- Returns {matched, examined, the last entry id examined ('' none),
--          {entry id, event id, ... of the first matching entries}}
local want_type, text = ARGV[4], string.lower(ARGV[5])
local since, before = tonumber(ARGV[6]), tonumber(ARGV[7])
local keep = tonumber(ARGV[8])
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', tonumber(ARGV[3]))
local matched, ids = 0, {}
for _, entry in ipairs(entries) do
  local f = entry[2]
  local t, reason, lf, id = '', '', 0, ''
  for i = 1, #f, 2 do
    local name = f[i]
    if name == 't' then t = f[i + 1]
    elseif name == 'id' then id = f[i + 1]
    elseif name == 'reason' then reason = f[i + 1]
    elseif name == 'lf' then lf = tonumber(f[i + 1]) or 0 end
  end
  if (want_type == '' or t == want_type)
    and (since == nil or lf >= since) and (before == nil or lf < before)
    and (text == '' or string.find(string.lower(reason), text, 1, true)) then
    matched = matched + 1
    if #ids < 2 * keep then
      ids[#ids + 1] = entry[1]
      ids[#ids + 1] = id
    end
  end
end
local last = ''
if #entries > 0 then last = entries[#entries][1] end
return { matched, #entries, last, ids }
