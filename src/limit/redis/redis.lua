-- keygate: LimitBatch::evaluate on one API key's cells, all-or-nothing, in one call.
-- The layout is described in src/limit/redis/script.rs.
--
-- KEYS[1]  the key's hash, "<prefix>:{<kid>}": one field per cell, every cell of the key
-- ARGV[1]  now, in whole microseconds since the epoch
-- ARGV[2]  how long a lease lives, in ms (lease + grace)     ARGV[3]  expiry grace, in ms
-- ARGV[4]  "1": a settlement, applied only if the lease it releases is still held; else "0"
-- ARGV[5 + 5(i-1) ..]  op i: kind, field, p1, p2, p3
--   1 rate      p1 = t (us)  p2 = tau (us)  p3 = t * (cost - 1) (us)
--  11 rate, check only (cost 0)   0 rate that can never admit
--   2 charge    p1 = t * units (us)        3 refund    p1 = t * units (us)
--   4 acquire   p1 = cap  p2 = member      5 release   p2 = member
--   6 quota     p1 = cap  p2 = amount      p3 = the period's end, ms ("" = lifetime)
--   7 record    p1 = amount                8 unrecord  p1 = amount        (p3 as for quota)
--   9 reserve   p1 = cap  p2 = amount     10 settle    p1 = reserved  p2 = used
--
-- A field is the cell's limit name, "<name>@<window>" for a window other than 0. A concurrency
-- cell also has "<field>#<member>" per lease held (its deadline, ms) and "<field>#" (a lower
-- bound of those deadlines): leases past their deadline are pruned when it passes. A windowed
-- name has "<name>@" ("<latest> <previous>" windows): a newer window deletes the one before
-- the previous. Every number is an integer below 2^53, exact in a Lua double.
--
-- Reply: {0, new_1 .. new_N}                    admitted, written
--        {1, old_1 .. old_N, why_1 .. why_N}    refused, nothing written; why: 0 admitted,
--                                               -1 never, -2 until the period's end, else the
--                                               earliest instant (us) the op would admit
--        {2, i}                                 the state of op i is not a limiter state
--        {3}                                    a settlement whose lease is gone: nothing done

local MAX = 9007199254740991
local key = KEYS[1]
local now = tonumber(ARGV[1])
local now_ms = math.floor(now / 1000)
local life, grace = tonumber(ARGV[2]), tonumber(ARGV[3])
local once = ARGV[4] == '1'
local n = (#ARGV - 4) / 5

local kinds, fields, names, slot = {}, {}, {}, {}
for i = 1, n do
  local b = 5 * i
  local kind, field = tonumber(ARGV[b]), ARGV[b + 1]
  kinds[i], fields[i] = kind, field
  names[#names + 1] = field
  slot[i] = #names
  if kind == 4 or kind == 5 then
    names[#names + 1] = field .. '#'
    names[#names + 1] = field .. '#' .. ARGV[b + 3]
  else
    local at = string.find(field, '@', 1, true)
    if at then
      names[#names + 1] = string.sub(field, 1, at)
    end
  end
end
local got = redis.pcall('HMGET', key, unpack(names))
if got.err then
  return {2, 1}
end

local function number(raw)
  if not raw then
    return 0
  end
  local v = tonumber(raw)
  if v == nil or v < 0 or v > MAX or v ~= math.floor(v) then
    return nil
  end
  return v
end

-- Leases of a concurrency cell past their deadline: counted no more, deleted.
local function prune(field, del)
  local all = redis.call('HGETALL', key)
  local prefix = field .. '#'
  local count, low = 0, nil
  for j = 1, #all, 2 do
    local f = all[j]
    if #f > #prefix and string.sub(f, 1, #prefix) == prefix then
      local deadline = tonumber(all[j + 1]) or 0
      if deadline < now_ms then
        del[#del + 1] = f
      else
        count = count + 1
        if low == nil or deadline < low then
          low = deadline
        end
      end
    end
  end
  return count, low
end

local function text(v)
  return string.format('%d', v)
end

local old, new, why = {}, {}, {}
local held, low, pruned, stored = {}, {}, {}, {}
local del = {}
local refused = false
for i = 1, n do
  local b = 5 * i
  local kind = kinds[i]
  local v = number(got[slot[i]])
  if v == nil then
    return {2, i}
  end
  stored[i] = v
  local p1, p2 = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local nv, w = v, 0
  if kind == 4 or kind == 5 then
    local lower = tonumber(got[slot[i] + 1])
    held[i] = got[slot[i] + 2] ~= false
    low[i] = lower
    if v > 0 and lower and lower < now_ms then
      v, low[i] = prune(fields[i], del)
      held[i] = held[i] and tonumber(got[slot[i] + 2]) >= now_ms
      pruned[i] = true
    end
    nv = v
    if kind == 4 then
      if v < p1 then
        nv = v + 1
      else
        w = -1
      end
    elseif held[i] then
      nv = v - 1
    end
  elseif kind == 1 or kind == 11 then
    local tat = v
    if tat == 0 then
      tat = now
    end
    local earliest = tat + tonumber(ARGV[b + 4]) - p2
    if now < earliest then
      w = earliest
    elseif kind == 1 then
      nv = math.min(math.max(tat, now) + p1 + tonumber(ARGV[b + 4]), MAX)
    end
  elseif kind == 0 then
    w = -1
  elseif kind == 2 then
    nv = math.min(math.max(v, now) + p1, MAX)
  elseif kind == 3 then
    if v > now then
      nv = math.max(v - p1, now)
    end
  elseif kind == 6 then
    if v >= p1 or v + p2 > p1 then
      w = -2
    else
      nv = v + p2
    end
  elseif kind == 7 then
    nv = math.min(v + p1, MAX)
  elseif kind == 8 then
    nv = math.max(v - p1, 0)
  elseif kind == 9 then
    if v >= p1 then
      w = -2
    else
      nv = math.min(v + p2, MAX)
    end
  elseif kind == 10 then
    nv = math.min(math.max(v - p1, 0) + p2, MAX)
  else
    return redis.error_reply('keygate: unknown limit op')
  end
  if w ~= 0 then
    refused = true
  end
  old[i], new[i], why[i] = v, nv, w
end

if refused then
  local reply = {1}
  for i = 1, n do
    reply[1 + i] = old[i]
    reply[1 + n + i] = why[i]
  end
  return reply
end

if once then
  local gone = true
  for i = 1, n do
    if kinds[i] == 5 and held[i] then
      gone = false
    end
  end
  if gone then
    return {3}
  end
end

local set = {}
local last, persist = 0, false
for i = 1, n do
  local kind, field, v = kinds[i], fields[i], new[i]
  local write = true
  if kind == 4 or kind == 5 then
    local member = field .. '#' .. ARGV[5 * i + 3]
    if kind == 4 then
      local deadline = now_ms + life
      set[#set + 1] = member
      set[#set + 1] = text(deadline)
      if low[i] == nil or old[i] == 0 then
        low[i], pruned[i] = deadline, true
      end
    elseif held[i] then
      del[#del + 1] = member
    end
    if v == 0 then
      del[#del + 1] = field .. '#'
    elseif pruned[i] then
      set[#set + 1] = field .. '#'
      set[#set + 1] = text(low[i])
    end
    if kind == 4 then
      last = math.max(last, now_ms + life)
    end
  elseif kind <= 3 or kind == 11 then
    last = math.max(last, math.ceil(v / 1000))
  else
    local ends = ARGV[5 * i + 4]
    if ends == '' then
      persist = persist or v > 0
    else
      last = math.max(last, tonumber(ends))
    end
    local at = string.find(field, '@', 1, true)
    if at then
      -- The windows of this name: a newer one retires the one before the previous.
      local index = string.sub(field, 1, at)
      local window = tonumber(string.sub(field, at + 1))
      local seen = got[slot[i] + 1]
      if not seen then
        set[#set + 1] = index
        set[#set + 1] = text(window)
      else
        local latest, previous = string.match(seen, '^(%d+) ?(%d*)$')
        latest = tonumber(latest) or 0
        if window > latest then
          if previous ~= '' and previous ~= nil then
            del[#del + 1] = index .. previous
          end
          set[#set + 1] = index
          set[#set + 1] = text(window) .. ' ' .. text(latest)
        elseif window < latest and (previous == '' or previous == nil or window < tonumber(previous)) then
          write = false
        end
      end
    end
  end
  if write and v ~= stored[i] then
    if v == 0 then
      del[#del + 1] = field
    else
      set[#set + 1] = field
      set[#set + 1] = text(v)
    end
  end
end
if #del > 0 then
  redis.call('HDEL', key, unpack(del))
end
if #set > 0 then
  -- The key lives as long as its longest-lived cell: -2 new, -1 kept for good (a lifetime
  -- counter), else the ms it has left.
  local left = redis.call('PTTL', key)
  redis.call('HSET', key, unpack(set))
  if persist then
    redis.call('PERSIST', key)
  else
    local ttl = math.max(last - now_ms + grace, 1)
    if left == -2 or (left >= 0 and left < ttl) then
      redis.call('PEXPIRE', key, text(ttl))
    end
  end
end

local reply = {0}
for i = 1, n do
  reply[1 + i] = new[i]
end
return reply
