-- promote: move retries that are due from the retry set back into the stream.
--
-- KEYS[1] stream   KEYS[2] status   KEYS[3] retry   KEYS[4] retry body
-- KEYS[5] retry error
-- ARGV[1] now (ms) ARGV[2] the most events to move in one call
-- Each event leaves the retry set and enters the stream in the same step, so two
-- promoters racing can never enqueue one retry twice or lose it.
-- Returns          the number of events moved.
-- Counters         none (the retry was counted when it was scheduled)
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  local env = redis.call('HGET', KEYS[4], id)
  local status = redis.call('HGET', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('HDEL', KEYS[4], id)
  redis.call('HDEL', KEYS[5], id)
  if env and status then
    -- status is "r:<attempts>:<first failure>[:<ordering key digest>]"
    local attempts, first, kd = string.match(status, '^r:(%d+):(%d*):?(%x*)$')
    local entry
    if kd and kd ~= '' then
      entry = redis.call('XADD', KEYS[1], '*', 'id', id, 'a', attempts, 'f', first, 'e', env, 'k', kd)
    else
      entry = redis.call('XADD', KEYS[1], '*', 'id', id, 'a', attempts or '0', 'f', first or '', 'e', env)
    end
    redis.call('HSET', KEYS[2], id, 'q:' .. entry)
  end
end
return #due
