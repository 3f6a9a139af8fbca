-- A worker that stops on purpose hands its session back: the session is queued again, a new job
-- enqueued and the old one acknowledged, in one step (two calls could leave a queued session
-- without a job). KEYS: session, events, jobs. ARGV: lease, maxlen, group, old job id. A retried
-- call whose first run happened finds its lease in 'released_by' and answers 1, enqueuing nothing.
local s = redis.call('HMGET', KEYS[1], 'lease', 'released_by')
if s[2] == ARGV[1] then return 1 end
if s[1] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'released_by', ARGV[1])
redis.call('HDEL', KEYS[1], 'lease', 'job_id', 'worker')
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'type', 'status', 'data',
           cjson.encode({status='queued'}))
redis.call('XADD', KEYS[3], '*', 'session', redis.call('HGET', KEYS[1], 'id'))
redis.call('XACK', KEYS[3], ARGV[3], ARGV[4])
redis.call('XDEL', KEYS[3], ARGV[4])
return 1
