-- take_turn: claim a periodic job (e.g. pruning the store) for one process for a while.
--
-- KEYS[1] the job's lease ({p}:lease:<job>)
-- ARGV[1] the claimant's name   ARGV[2] how long the turn lasts, ms
-- The lease is never released: it expires after ARGV[2], so among any number of
-- processes the job runs at most once per period, and again after a claimant died.
-- Returns 1 when this claimant has the turn, 0 when another one has it.
-- Counters none
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
