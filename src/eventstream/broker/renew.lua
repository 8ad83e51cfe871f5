-- renew: extend the leases of entries this worker is still handling, and beat its heart.
--
-- KEYS[1] stream   KEYS[2] workers
-- ARGV[1] group    ARGV[2] consumer   ARGV[3] now (ms)
-- ARGV[4..]        stream entry ids in flight in this worker
-- Resets the idle time of each entry still pending for this consumer (XCLAIM JUSTID
-- does not count a delivery). An entry another worker has taken over is left alone.
-- Returns          the entry ids this worker no longer owns.
-- Counters         none
local group, consumer = ARGV[1], ARGV[2]
redis.call('ZADD', KEYS[2], ARGV[3], consumer)
local lost = {}
for i = 4, #ARGV do
  local entry = ARGV[i]
  local owned = redis.call('XPENDING', KEYS[1], group, entry, entry, 1, consumer)
  if #owned == 1 then
    redis.call('XCLAIM', KEYS[1], group, consumer, 0, entry, 'JUSTID')
  else
    lost[#lost + 1] = entry
  end
end
return lost
