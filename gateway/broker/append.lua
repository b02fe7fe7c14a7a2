-- Append a batch of change records to one model stream, fenced by the relay's lease.
--
-- KEYS[1] the stream, KEYS[2] its epoch, KEYS[3] its lease. All three share one hash tag, so they live in one
-- Cluster slot and this script may touch them together.
-- ARGV[1] the caller's lease token
-- ARGV[2] a fresh epoch, used only if the stream has none yet (SET NX): the first writer or reader decides
-- ARGV[3] MAXLEN for approximate trimming, '' to keep everything
-- ARGV[4] N, the number of records, followed by 5 values per record, oldest first:
--         outbox id, change, '1' or '0' (has a before image), before ('' when absent), committed_at
-- Returns the N entry ids, oldest first, or the error LEASELOST.
--
-- Why one script: the lease check, the epoch, reading the newest id for `prev` and the XADDs must be one atomic
-- step. Otherwise a relay that stalled past its lease could interleave with its successor, and `prev` could name
-- an entry that is not the one just before.
--
-- Replay guard: redis-py re-sends a command after a connection error, and the first attempt may have run with
-- only its reply lost. If the newest N entries already carry exactly these outbox ids in this order, that is what
-- happened: their ids are returned and nothing is appended twice. Any other batch is appended as given.

if redis.call('GET', KEYS[3]) ~= ARGV[1] then
  return redis.error_reply('LEASELOST the lease on this stream is not held by this token')
end
redis.call('SET', KEYS[2], ARGV[2], 'NX')
local epoch = redis.call('GET', KEYS[2])
local n = tonumber(ARGV[4])

local function outbox_id(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'o' then
      return fields[i + 1]
    end
  end
  return nil
end

local function record_outbox_id(i)
  return ARGV[4 + (i - 1) * 5 + 1]
end

local prev = '0-0'
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #newest > 0 then
  prev = newest[1][1]
  if n > 0 and outbox_id(newest[1][2]) == record_outbox_id(n) then
    local batch = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', n)
    if #batch == n then
      local ids = {}
      for i = 1, n do
        local entry = batch[n - i + 1] -- batch is newest first, records oldest first
        if outbox_id(entry[2]) ~= record_outbox_id(i) then
          ids = nil
          break
        end
        ids[i] = entry[1]
      end
      if ids then
        return ids
      end
    end
  end
end

local ids = {}
for i = 1, n do
  local base = 4 + (i - 1) * 5
  local args = { 'XADD', KEYS[1] }
  if ARGV[3] ~= '' then
    args[#args + 1] = 'MAXLEN'
    args[#args + 1] = '~'
    args[#args + 1] = ARGV[3]
  end
  args[#args + 1] = '*'
  args[#args + 1] = 'c'
  args[#args + 1] = ARGV[base + 2]
  if ARGV[base + 3] == '1' then
    args[#args + 1] = 'b'
    args[#args + 1] = ARGV[base + 4]
  end
  args[#args + 1] = 'o'
  args[#args + 1] = ARGV[base + 1]
  args[#args + 1] = 'p'
  args[#args + 1] = prev
  args[#args + 1] = 'e'
  args[#args + 1] = epoch
  args[#args + 1] = 't'
  args[#args + 1] = ARGV[base + 5]
  prev = redis.call(unpack(args))
  ids[i] = prev
end
return ids
