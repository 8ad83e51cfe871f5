-- leave: a worker that stops cleanly drops its heartbeat, and its consumer if idle.
--
-- KEYS[1] stream   KEYS[2] workers
-- ARGV[1] group    ARGV[2] consumer
-- The consumer is deleted only when nothing is pending for it, checked in the same
-- step: XGROUP DELCONSUMER forgets a consumer's pending entries, which would strand
-- them (no longer pending, never delivered again). A consumer that still owns
-- entries stays, so that a live worker reclaims them.
-- Returns          0 when the consumer was kept because it still owns entries,
--                  1 otherwise (deleted, or there was none).
-- Counters         none
redis.call('ZREM', KEYS[2], ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
local ok, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if not ok then return 1 end -- no group: no consumer either
if #pending > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
