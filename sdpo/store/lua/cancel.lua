-- KEYS: session, attempts, steps, events. ARGV: events maxlen.
-- Returns the status before the call. A queued session ends at once; a running one is flagged,
-- and its worker stops between phases.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return '' end
if status == 'running' and redis.call('HGET', KEYS[1], 'cancel_requested') ~= '1' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[1], '*', 'type', 'status', 'data',
             cjson.encode({status='running', cancel_requested=true}))
end
return status
