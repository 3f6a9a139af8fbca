-- KEYS: jobs. ARGV: group, consumer, job id.
-- Keep a job pending under its consumer: resets the idle time that XAUTOCLAIM looks at, but only
-- while the job is still ours (never steal it back from a worker that reclaimed it).
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
