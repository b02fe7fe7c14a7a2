-- A stream's epoch and retained range, read in one atomic step.
--
-- KEYS[1] the stream, KEYS[2] its epoch (one hash tag, one Cluster slot).
-- ARGV[1] a fresh epoch, used only if the stream has none yet (SET NX, as in append.lua), so every caller that
-- asks about a new or lost stream agrees on one epoch.
-- Returns { epoch, first id or '', last id or '' }.

redis.call('SET', KEYS[2], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[2])
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local first_id = ''
local last_id = ''
if #first > 0 then
  first_id = first[1][1]
end
if #last > 0 then
  last_id = last[1][1]
end
return { epoch, first_id, last_id }
