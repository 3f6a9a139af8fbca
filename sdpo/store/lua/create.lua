-- Admission and creation in one step, so parallel requests cannot all pass the checks and then
-- all write (check-then-act). KEYS: owner active, owner sessions, jobs, stats, idempotency, compare,
-- then session and events of each new session. ARGV[1]: the CreatePlan as JSON.
local p = cjson.decode(ARGV[1])
if redis.call('EXISTS', KEYS[7]) == 1 then return {'created', ''} end  -- a retry of this call
if p.idempotent then
  local earlier = redis.call('GET', KEYS[5])
  if earlier then return {'replay', earlier} end
end
local n = #p.sessions
if redis.call('XLEN', KEYS[3]) + n > p.max_queue then return {'queue_full', ''} end
if redis.call('SCARD', KEYS[1]) + n > p.quota then return {'quota', ''} end
if p.idempotent then redis.call('SET', KEYS[5], p.record, 'EX', p.idempotency_ttl_s) end
local function flat(map)
  local out = {}
  for k, v in pairs(map) do out[#out + 1] = k; out[#out + 1] = v end
  return out
end
for i, fields in ipairs(p.sessions) do
  redis.call('HSET', KEYS[5 + 2 * i], unpack(flat(fields)))
  redis.call('XADD', KEYS[6 + 2 * i], 'MAXLEN', '~', p.events_maxlen, '*', 'type', 'status',
             'data', cjson.encode({status='queued'}))
  redis.call('ZADD', KEYS[2], fields.created_at, fields.id)
  redis.call('SADD', KEYS[1], fields.id)
  redis.call('XADD', KEYS[3], '*', 'session', fields.id)
end
if p.compare then
  redis.call('HSET', KEYS[6], unpack(flat(p.compare)))
  redis.call('EXPIRE', KEYS[6], p.compare_ttl_s)
end
redis.call('HINCRBY', KEYS[4], 'sessions_created', n)
return {'created', ''}
