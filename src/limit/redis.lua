-- keygate: LimitBatch::evaluate for one key's cells, all-or-nothing, in one round trip.
-- The argument layout and the number scheme are described in src/limit/redis.rs.
--
-- KEYS[i]   the cell of op i ("<prefix>:{<kid>}:<name>:<window>"), 1 <= i <= 6
-- ARGV[1]   now: whole seconds since the epoch      ARGV[2]  now: nanoseconds (0..1e9)
-- ARGV[3]   concurrency lease in ms (>= 1)           ARGV[4]  expiry grace in ms (>= 0)
-- ARGV[5 + 5(i-1) ..]  op i: kind p1 p2 p3 p4, each p a decimal u64 ("" for none)
--   1 rate      p1 = t   p2 = tau   p3 = additional = t*(cost-1)   p4 = 0 take | 1 check only | 2 never
--   2 charge    p1 = t*units (saturated)
--   3 refund    p1 = t*units (saturated)
--   4 acquire   p1 = cap
--   5 release
--   6 quota     p1 = cap  p2 = amount  p3 = resets_at ns ("" = lifetime)
--   7 record    p1 = amount            p3 = resets_at ns ("" = lifetime)
--   8 unrecord  p1 = amount            p3 = resets_at ns ("" = lifetime)
--
-- Reply: {0, new_1 .. new_N}                      admitted, every cell written
--        {1, old_1 .. old_N, why_1 .. why_N}      refused, nothing written; why_i is "" (op i
--                                                 admitted), "never", or the wait in ns
--        {2, i}                                   the value at KEYS[i] is not a limiter state
--        {3}                                      already applied (see KEYS[N + 1] below)
--
-- KEYS[N + 1], optional: the marker of a settlement (an update that never refuses: usage
-- reconciled, spend recorded, a slot released) that may be sent again after a failed call.
-- The batch is written only if the marker did not exist, and the marker is then kept for
-- ARGV[5 + 5N] ms, so a settlement sent twice (the first reply lost) counts once.
-- Values in replies are decimal strings (exact for every u64).
--
-- Numbers: Lua numbers are doubles, exact only up to 2^53, and a state may be up to 2^63 - 1.
-- Every u64 is therefore held as two exact doubles (s, n) = (value div 1e9, value mod 1e9),
-- parsed from and formatted to decimal text; add, sub and lt below are exact on them and saturate
-- as the Rust does (add at u64::MAX, sub at 0).

local E9 = 1000000000
local MAX_S, MAX_N = 9223372036, 854775807 -- MAX_STATE = i64::MAX
local U64_S, U64_N = 18446744073, 709551615 -- u64::MAX

local function parse(str)
  local len = string.len(str)
  if len == 0 or len > 20 or string.find(str, '%D') then
    return nil
  end
  if len <= 9 then
    return 0, tonumber(str)
  end
  return tonumber(string.sub(str, 1, len - 9)), tonumber(string.sub(str, len - 8))
end

local function lt(as, an, bs, bn)
  return as < bs or (as == bs and an < bn)
end

local function add(as, an, bs, bn)
  local s, n = as + bs, an + bn
  if n >= E9 then
    s, n = s + 1, n - E9
  end
  if lt(U64_S, U64_N, s, n) then
    return U64_S, U64_N
  end
  return s, n
end

local function sub(as, an, bs, bn)
  if not lt(bs, bn, as, an) then
    return 0, 0
  end
  local s, n = as - bs, an - bn
  if n < 0 then
    s, n = s - 1, n + E9
  end
  return s, n
end

local function fmt(s, n)
  if s == 0 then
    return string.format('%d', n)
  end
  return string.format('%d%09d', s, n)
end

-- Whole milliseconds from now until (s, n), rounded up; 0 if that is not in the future.
local function ms_until(s, n, now_s, now_n)
  local ds, dn = sub(s, n, now_s, now_n)
  return ds * 1000 + math.floor((dn + 999999) / 1000000)
end

local now_s, now_n = tonumber(ARGV[1]), tonumber(ARGV[2])
local lease_ms, grace_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
-- The GCRA's t0: now clamped to MAX_STATE (Gcra's `clamp`).
local t0_s, t0_n = now_s, now_n
if lt(MAX_S, MAX_N, t0_s, t0_n) then
  t0_s, t0_n = MAX_S, MAX_N
end

local cells = math.floor((#ARGV - 4) / 5)
local old_s, old_n, new_s, new_n, why = {}, {}, {}, {}, {}
local refused = false

for i = 1, cells do
  local raw = redis.pcall('GET', KEYS[i])
  local s, n = 0, 0
  if type(raw) == 'table' then
    return {2, i}
  elseif raw then
    s, n = parse(raw)
    if s == nil or lt(MAX_S, MAX_N, s, n) then
      return {2, i}
    end
  end
  old_s[i], old_n[i] = s, n

  local base = 4 + 5 * (i - 1)
  local kind = tonumber(ARGV[base + 1])
  local p1s, p1n = parse(ARGV[base + 2])
  local ns, nn = s, n
  local w = ''

  if kind == 1 then
    local mode = ARGV[base + 5]
    if mode == '2' then
      w = 'never'
    else
      local taus, taun = parse(ARGV[base + 3])
      local adds, addn = parse(ARGV[base + 4])
      local es, en = s, n -- tat_eff
      if s == 0 and n == 0 then
        es, en = t0_s, t0_n
      end
      local xs, xn = add(es, en, adds, addn)
      xs, xn = sub(xs, xn, taus, taun) -- earliest
      if lt(t0_s, t0_n, xs, xn) then
        w = fmt(sub(xs, xn, now_s, now_n))
      elseif mode == '0' then
        if lt(es, en, t0_s, t0_n) then
          es, en = t0_s, t0_n
        end
        ns, nn = add(es, en, p1s, p1n)
        ns, nn = add(ns, nn, adds, addn)
      end
    end
  elseif kind == 2 then
    local bs, bn = s, n
    if lt(bs, bn, t0_s, t0_n) then
      bs, bn = t0_s, t0_n
    end
    ns, nn = add(bs, bn, p1s, p1n)
    if lt(MAX_S, MAX_N, ns, nn) then
      ns, nn = MAX_S, MAX_N
    end
  elseif kind == 3 then
    if lt(t0_s, t0_n, s, n) then
      ns, nn = sub(s, n, p1s, p1n)
      if lt(ns, nn, t0_s, t0_n) then
        ns, nn = t0_s, t0_n
      end
    end
  elseif kind == 4 then
    if lt(s, n, p1s, p1n) then
      ns, nn = add(s, n, 0, 1)
    else
      w = 'never'
    end
  elseif kind == 5 then
    ns, nn = sub(s, n, 0, 1)
  elseif kind == 6 then
    local as, an = parse(ARGV[base + 3])
    local ts, tn = add(s, n, as, an)
    if not lt(s, n, p1s, p1n) or lt(p1s, p1n, ts, tn) then
      local rs, rn = parse(ARGV[base + 4])
      if rs == nil then
        w = 'never'
      else
        w = fmt(sub(rs, rn, now_s, now_n))
      end
    else
      ns, nn = ts, tn
    end
  elseif kind == 7 then
    ns, nn = add(s, n, p1s, p1n)
    if lt(MAX_S, MAX_N, ns, nn) then
      ns, nn = MAX_S, MAX_N
    end
  elseif kind == 8 then
    ns, nn = sub(s, n, p1s, p1n)
  else
    return redis.error_reply('keygate: unknown limit op')
  end

  if w ~= '' then
    refused = true
  end
  why[i], new_s[i], new_n[i] = w, ns, nn
end

if refused then
  local reply = {1}
  for i = 1, cells do
    reply[1 + i] = fmt(old_s[i], old_n[i])
    reply[1 + cells + i] = why[i]
  end
  return reply
end

if #KEYS > cells then
  local ttl = ARGV[5 + 5 * cells]
  if not redis.call('SET', KEYS[cells + 1], '1', 'NX', 'PX', ttl) then
    return {3}
  end
end

local reply = {0}
for i = 1, cells do
  local s, n = new_s[i], new_n[i]
  reply[1 + i] = fmt(s, n)
  -- What the store keeps is at most MAX_STATE (the reply shows the value as computed).
  if lt(MAX_S, MAX_N, s, n) then
    s, n = MAX_S, MAX_N
  end
  local kind = tonumber(ARGV[4 + 5 * (i - 1) + 1])
  local key = KEYS[i]
  if s == 0 and n == 0 then
    -- 0 is "absent".
    redis.call('DEL', key)
  elseif kind == 4 then
    redis.call('SET', key, fmt(s, n), 'PX', string.format('%d', lease_ms))
  elseif kind == 5 then
    redis.call('SET', key, fmt(s, n), 'KEEPTTL')
  else
    local es, en = s, n -- a rate cell expires at its TAT
    if kind >= 6 then
      es, en = parse(ARGV[4 + 5 * (i - 1) + 4])
    end
    if es == nil then
      redis.call('SET', key, fmt(s, n))
    else
      local ms = ms_until(es, en, now_s, now_n) + grace_ms
      if ms > 0 then
        redis.call('SET', key, fmt(s, n), 'PX', string.format('%d', ms))
      else
        redis.call('DEL', key)
      end
    end
  end
end
return reply
