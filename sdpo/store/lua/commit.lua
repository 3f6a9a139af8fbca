-- The step transaction. KEYS: session, attempts, steps, events. ARGV: lease, step index,
-- attempts used after the step, step JSON, events maxlen, solution JSON ('' if none), seconds to
-- the first success, then one JSON per attempt. A retried call finds its step committed and
-- answers 'duplicate'.
local s = redis.call('HMGET', KEYS[1], 'lease', 'status', 'steps', 'attempts_used', 'max_attempts')
if s[1] ~= ARGV[1] or s[2] ~= 'running' then return 'lease_lost' end
local step = tonumber(ARGV[2])
if tonumber(s[3]) == step + 1 then return 'duplicate' end
if tonumber(s[3]) ~= step then return 'out_of_order' end
local used = tonumber(s[4]) + (#ARGV - 7)
if used ~= tonumber(ARGV[3]) or used > tonumber(s[5]) then return 'over_budget' end
local bytes = 0
for i = 8, #ARGV do
  redis.call('RPUSH', KEYS[2], ARGV[i])
  bytes = bytes + #ARGV[i]
end
redis.call('RPUSH', KEYS[3], ARGV[4])
redis.call('HSET', KEYS[1], 'steps', step + 1, 'attempts_used', used)
redis.call('HINCRBY', KEYS[1], 'attempt_bytes', bytes)
if ARGV[6] ~= '' and redis.call('HEXISTS', KEYS[1], 'first_success_attempt') == 0 then
  local first = cjson.decode(ARGV[6])
  redis.call('HSET', KEYS[1], 'first_success_attempt', first.attempt,
             'first_success_s', ARGV[7], 'solution', ARGV[6])
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'type', 'step', 'data', ARGV[4])
return 'committed'
