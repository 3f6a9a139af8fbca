-- KEYS: session, steps.
-- The status read: the hash and its committed steps as one JSON document, read atomically. The
-- prompt and the verifier stay out of it (the view never shows them; they can be large).
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return false end
local fields = {}
for i = 1, #h, 2 do fields[h[i]] = h[i + 1] end
fields['prompt'], fields['verifier'] = nil, nil
local steps, n = {}, tonumber(fields['steps'])
if n > 0 then steps = redis.call('LRANGE', KEYS[2], 0, n - 1) end
return '{"session":' .. cjson.encode(fields) .. ',"steps":[' .. table.concat(steps, ',') .. ']}'
