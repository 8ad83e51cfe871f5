-- renew: extend the leases of entries this worker is still handling, and beat its heart.
--
-- KEYS[1] stream   KEYS[2] workers
-- ARGV[1] group    ARGV[2] consumer   ARGV[3] now (ms)
-- ARGV[4..]        stream entry ids in flight in this worker
-- Resets the idle time of each entry still pending for this consumer (XCLAIM JUSTID
-- does not count a delivery). An entry another worker has taken over is left alone
-- (fencing as in complete.lua).
-- Returns          the entry ids this worker no longer owns.
-- Counters         none
local group, consumer = ARGV[1], ARGV[2]
redis.call('ZADD', KEYS[2], ARGV[3], consumer)
local asked = {}
for i = 4, #ARGV do asked[#asked + 1] = ARGV[i] end
local mine = owned(KEYS[1], group, consumer, asked)
local keep, lost = {}, {}
for _, entry in ipairs(asked) do
  if mine[entry] then
    mine[entry] = false -- named twice: renewed once, and not lost
    keep[#keep + 1] = entry
  elseif mine[entry] == nil then
    lost[#lost + 1] = entry
  end
end
chunks(keep, 1000, function(i, j)
  -- unpack must come last in an argument list (elsewhere Lua keeps only its first value)
  local args = { KEYS[1], group, consumer, 0 }
  for k = i, j do args[#args + 1] = keep[k] end
  args[#args + 1] = 'JUSTID'
  redis.call('XCLAIM', unpack(args))
end)
return lost
