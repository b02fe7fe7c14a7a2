-- Extend a lease only if the caller still holds it (compare and expire, atomically).
-- KEYS[1] the lease; ARGV[1] the caller's token; ARGV[2] the new time to live in milliseconds.
-- Returns 1 if extended, 0 if the lease has expired or belongs to someone else.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
