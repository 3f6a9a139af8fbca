-- End a session. KEYS: session, attempts, steps, events (all expire with it).
-- ARGV: lease ('' = not leased, e.g. a cancel of a queued session), status, error, now, ttl, maxlen.
-- A retried call whose first run ended the session finds its lease in 'ended_by' and answers 1.
local s = redis.call('HMGET', KEYS[1], 'lease', 'status', 'attempts_used', 'first_success_attempt',
                     'ended_by')
if not s[2] then return 0 end
if ARGV[1] ~= '' and s[5] == ARGV[1] then return 1 end
if s[2] ~= 'running' and s[2] ~= 'queued' then return 0 end
if (s[1] or '') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished_at', ARGV[4], 'ended_by', ARGV[1])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3]) end
redis.call('HDEL', KEYS[1], 'lease')
local data = {status=ARGV[2], attempts_used=tonumber(s[3]),
              first_success_attempt=tonumber(s[4] or ''), error=ARGV[3]}
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'type', 'end', 'data',
           cjson.encode(data))
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return 1
