-- keygate: LimitBatch::evaluate on one API key's cells, all-or-nothing per batch, for one or
-- more batches of the same key in one call. The layout is described in src/limit/redis/script.rs.
--
-- KEYS[1]   the key's hash, "<prefix>:{<kid>}": one field per cell, every cell of the key
-- ARGV[1]   the numbers, little-endian doubles (struct '<d'), so the script parses no text:
--             call:  now (us, the latest of the batches')  lease (ms, lease + grace)  grace (ms)
--                    batches  slack (ms)
--             batch: now (us)  once (1: a settlement, applied only if a lease it releases is
--                    still held)  ops
--             op:    kind  field  aux  member  p1  p2  p3  window
-- ARGV[2..] the fields the ops name, ARGV[2] always "~" (the key's expiry, ms); an op names a
--           field by its index in this list (1 = "~"), 0 for none
--
--   kind  1 rate      p1 = t (us)  p2 = tau (us)  p3 = t * (cost - 1) (us)
--        11 rate, check only (cost 0)   0 rate that can never admit
--         2 charge    p1 = t * units (us)        3 refund    p1 = t * units (us)
--         4 acquire   p1 = cap                   5 release          (aux "<f>#", member "<f>#<m>")
--         6 quota     p1 = cap  p2 = amount      p3 = the period's end, ms (-1: lifetime)
--         7 record    p1 = amount                8 unrecord  p1 = amount        (p3 as for quota)
--         9 reserve   p1 = cap  p2 = amount     10 settle    p1 = reserved  p2 = used
--   A windowed cell ("<name>@<window>") has aux "<name>@", its window in `window`.
--
-- Stored values are decimal integers, as the earlier one-batch script wrote them, so gateways
-- of both versions can share the state during an upgrade. A concurrency cell also has
-- "<field>#<member>" per lease held (its deadline, ms) and "<field>#" (a lower bound of those
-- deadlines): leases past their deadline are pruned when it passes. A windowed name has
-- "<name>@" ("<latest> <previous>" windows): a newer window deletes the one before the
-- previous. Every number is an integer below 2^53, exact in a Lua double. "~" holds when the
-- key expires (ms), or 2^53 - 1 while it is kept for good (a lifetime counter): the TTL is set
-- only when it must grow, `slack` past what the key needs, so most calls leave it alone.
--
-- Reply, batch after batch:  0, new_1 .. new_N                  admitted, written
--                            1, old_1 .. old_N, why_1 .. why_N  refused, nothing written; why: 0
--                                     admitted, -1 never, -2 until the period's end, else the
--                                     earliest instant (us) the op would admit
--                            3                                  a settlement whose lease is
--                                                               gone: nothing done
--        or {2}: a field is not a limiter state; nothing done.

local MAX = 9007199254740991
local key = KEYS[1]
local floor, format = math.floor, string.format

local nums = ARGV[1]
local count = #nums / 8
local p = {struct.unpack('<' .. string.rep('d', count), nums)}
local call_now, life, grace, batches, slack = p[1], p[2], p[3], p[4], p[5]
local call_ms = floor(call_now / 1000)

local got = redis.pcall('HMGET', key, unpack(ARGV, 2))
if got.err then
  return {2}
end

-- A stored number; nil if it is not one.
local function number(raw)
  if not raw then
    return 0
  end
  local v = tonumber(raw)
  if v == nil or v < 0 or v > MAX or v ~= floor(v) then
    return nil
  end
  return v
end

-- A table with 16 slots made at once: growing a table rehashes it, which costs more here than
-- the script's arithmetic.
local function slots()
  return {false, false, false, false, false, false, false, false, false, false, false, false, false, false, false, false}
end

local function text(v)
  return format('%d', v)
end

-- The state as the batches see it: cur[i] is field i's value (0 absent; false or nil while
-- not read yet), dirty[i] whether it is to be written; a window index "<name>@" is latest[i],
-- previous[i].
local cur, dirty = slots(), slots()
local latest, previous = {}, {}
local nfields = #ARGV - 1
local extra_del = {}

local function value(i)
  local v = cur[i]
  if not v then
    v = number(got[i])
    if v == nil then
      return nil
    end
    cur[i] = v
  end
  return v
end

local function index_of(i)
  local l = latest[i]
  if l == nil then
    local raw = got[i]
    local pv = 0
    l = 0
    if raw then
      local a, b = string.match(raw, '^(%d+) ?(%d*)$')
      l, pv = tonumber(a) or 0, tonumber(b) or 0
    end
    latest[i], previous[i] = l, pv
  end
  return l, previous[i]
end

-- Leases of a concurrency cell past their deadline: counted no more, deleted. Runs on the
-- stored state, before any batch, once per cell whose earliest deadline has passed.
local pruned = {}
local function prune(fi, ai)
  local field = ARGV[fi + 1]
  local all = redis.call('HGETALL', key)
  local prefix = field .. '#'
  local n, low = 0, 0
  local members = {}
  for j = 1, nfields do
    members[ARGV[j + 1]] = j
  end
  for j = 1, #all, 2 do
    local f = all[j]
    if #f > #prefix and string.sub(f, 1, #prefix) == prefix then
      local deadline = number(all[j + 1]) or 0
      local listed = members[f]
      if deadline < call_ms then
        if listed then
          cur[listed], dirty[listed] = 0, true
        else
          extra_del[#extra_del + 1] = f
        end
      else
        n = n + 1
        if low == 0 or deadline < low then
          low = deadline
        end
      end
    end
  end
  cur[fi], dirty[fi] = n, true
  cur[ai], dirty[ai] = low, true
end

local at = 6
for _ = 1, batches do
  at = at + 3
  local ops = p[at - 1]
  local base = at
  for k = 0, ops - 1 do
    local o = base + 8 * k
    local kind = p[o]
    if kind == 4 or kind == 5 then
      local fi, ai = p[o + 1], p[o + 2]
      if not pruned[fi] then
        pruned[fi] = true
        local v, lower = value(fi), value(ai)
        if v == nil or lower == nil then
          return {2}
        end
        if v > 0 and lower > 0 and lower < call_ms then
          prune(fi, ai)
        end
      end
    end
  end
  at = base + 8 * ops
end

local reply = {}
local last, persist, wrote = 0, false, false
local old, new, why = {0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0}
at = 6
for _ = 1, batches do
  local now, once, ops = p[at], p[at + 1] == 1, p[at + 2]
  local now_ms = floor(now / 1000)
  at = at + 3
  local refused, holds = false, false
  for k = 1, ops do
    local o = at + 8 * (k - 1)
    local kind, fi = p[o], p[o + 1]
    local v = value(fi)
    if v == nil then
      return {2}
    end
    local p1, p2, p3 = p[o + 4], p[o + 5], p[o + 6]
    local nv, w = v, 0
    if kind == 4 then
      if v < p1 then
        nv = v + 1
      else
        w = -1
      end
    elseif kind == 5 then
      local mi = p[o + 3]
      if value(mi) == nil then
        return {2}
      end
      if cur[mi] > 0 then
        nv = math.max(v - 1, 0)
        holds = true
      end
    elseif kind == 1 or kind == 11 then
      local tat = v
      if tat == 0 then
        tat = now
      end
      local earliest = tat + p3 - p2
      if now < earliest then
        w = earliest
      elseif kind == 1 then
        nv = math.min(math.max(tat, now) + p1 + p3, MAX)
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
    old[k], new[k], why[k] = v, nv, w
  end

  if refused then
    reply[#reply + 1] = 1
    for k = 1, ops do
      reply[#reply + 1] = old[k]
    end
    for k = 1, ops do
      reply[#reply + 1] = why[k]
    end
  elseif once and not holds then
    reply[#reply + 1] = 3
  else
    reply[#reply + 1] = 0
    for k = 1, ops do
      local o = at + 8 * (k - 1)
      local kind, fi, ai, v = p[o], p[o + 1], p[o + 2], new[k]
      -- false for a window older than the two kept: its cell is not brought back
      local write = true
      if kind == 4 or kind == 5 then
        local mi = p[o + 3]
        if kind == 4 then
          local deadline = now_ms + life
          cur[mi], dirty[mi] = deadline, true
          if cur[ai] == 0 or old[k] == 0 then
            cur[ai], dirty[ai] = deadline, true
          end
          last = math.max(last, deadline)
        elseif cur[mi] > 0 then
          cur[mi], dirty[mi] = 0, true
        end
        if v == 0 and cur[ai] ~= 0 then
          cur[ai], dirty[ai] = 0, true
        end
      elseif kind <= 3 or kind == 11 then
        last = math.max(last, math.ceil(v / 1000))
      else
        local ends = p[o + 6]
        if ends < 0 then
          persist = persist or v > 0
        else
          last = math.max(last, ends)
        end
        if ai > 0 then
          -- The windows of this name: a newer one retires the one before the previous.
          local window = p[o + 7]
          local l, pv = index_of(ai)
          if l == 0 then
            latest[ai], dirty[ai] = window, true
          elseif window > l then
            if pv ~= 0 then
              extra_del[#extra_del + 1] = ARGV[ai + 1] .. text(pv)
            end
            latest[ai], previous[ai], dirty[ai] = window, l, true
          elseif window < l and (pv == 0 or window < pv) then
            write = false
          end
        end
      end
      if write and v ~= cur[fi] then
        cur[fi], dirty[fi] = v, true
      end
      reply[#reply + 1] = v
    end
  end
  at = at + 8 * ops
end

-- Written once, after every batch.
local set, ns, del = slots(), 0, extra_del
for i = 2, nfields do
  if dirty[i] then
    local f = ARGV[i + 1]
    local l = latest[i]
    if l ~= nil then
      set[ns + 1] = f
      set[ns + 2] = previous[i] == 0 and text(l) or text(l) .. ' ' .. text(previous[i])
      ns = ns + 2
    elseif cur[i] == 0 then
      del[#del + 1] = f
    else
      set[ns + 1] = f
      set[ns + 2] = text(cur[i])
      ns = ns + 2
    end
  end
end
if #del > 0 then
  redis.call('HDEL', key, unpack(del))
end
if ns > 0 then
  local expires = number(got[1]) or 0
  if persist then
    if expires ~= MAX then
      set[ns + 1], set[ns + 2], ns = '~', text(MAX), ns + 2
      redis.call('HSET', key, unpack(set, 1, ns))
      redis.call('PERSIST', key)
      return reply
    end
  elseif expires ~= MAX and expires < last + grace then
    -- The key lives as long as its longest-lived cell, and `slack` more, so that its TTL is
    -- set again only once in a while. A TTL is never shortened (an earlier version of the
    -- script, sharing the key during an upgrade, may have set a longer one without "~").
    local target = last + grace + slack
    local left = redis.call('PTTL', key)
    if left == -1 then
      target = MAX
    elseif left >= 0 and left >= target - call_ms then
      target = call_ms + left
    end
    set[ns + 1], set[ns + 2], ns = '~', text(target), ns + 2
    redis.call('HSET', key, unpack(set, 1, ns))
    if target ~= MAX then
      redis.call('PEXPIRE', key, text(math.max(target - call_ms, 1)))
    end
    return reply
  end
  redis.call('HSET', key, unpack(set, 1, ns))
elseif #del > 0 then
  -- When no field this call named is left, the key may hold nothing but "~": then it goes.
  local left = false
  for i = 2, nfields do
    if (dirty[i] and (cur[i] ~= 0 or latest[i] ~= nil)) or (not dirty[i] and got[i]) then
      left = true
      break
    end
  end
  if not left and redis.call('HLEN', key) <= 1 then
    redis.call('DEL', key)
  end
end
return reply
