-- Take a session for a job. KEYS: session, events. ARGV: job id, consumer, lease, now,
-- events maxlen. Returns {claimed | resumed | why not, claims}.
-- The lease (ARGV[3]) is new for every call and doubles as its idempotency token: a retried call
-- whose first run happened finds its own lease in place and answers what the first run did.
local s = redis.call('HMGET', KEYS[1], 'status', 'job_id', 'lease', 'claim_result', 'claims')
if not s[1] then return {'missing', '0'} end
if s[1] == 'running' and s[3] == ARGV[3] then return {s[4], s[5]} end
local result
if s[1] == 'queued' then
  result = 'claimed'
  if redis.call('HEXISTS', KEYS[1], 'started_at') == 0 then
    redis.call('HSET', KEYS[1], 'started_at', ARGV[4])
  end
elseif s[1] == 'running' and s[2] == ARGV[1] then
  result = 'resumed'
else
  return {s[1], '0'}
end
redis.call('HSET', KEYS[1], 'status', 'running', 'job_id', ARGV[1], 'worker', ARGV[2],
           'lease', ARGV[3], 'claim_result', result)
local claims = redis.call('HINCRBY', KEYS[1], 'claims', 1)
local data = cjson.encode({status='running', worker=ARGV[2], claims=claims})
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'type', 'status', 'data', data)
return {result, tostring(claims)}
