-- Give a lease up only if the caller still holds it (compare and delete, atomically), so a relay that lost its
-- lease never deletes its successor's.
-- KEYS[1] the lease; ARGV[1] the caller's token. Returns 1 if deleted, 0 otherwise.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
