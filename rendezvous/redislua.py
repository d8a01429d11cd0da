"""The Lua scripts of `redisstore.RedisStore`: each check-then-write step of the store is one
script, which Redis runs alone, so two servers never interleave inside one (the name race).

Scripts build their key names from the prefix in ARGV[1] (see the layout in `redisstore`), so
they need one Redis, not Redis Cluster. Times arrive as exact float text and are compared with
`tonumber`; Lua never formats a float back (its `%.14g` would round it).
"""

from __future__ import annotations

# Helpers: is the member record at `key` live at `now`; raise a key's TTL to at least `ttl`.
LIVE = """
local function live(key, now)
  local e = redis.call('HGET', key, 'expires')
  return e and tonumber(e) > now
end
local function longer_ttl(key, ttl)
  local t = redis.call('TTL', key)
  if t < ttl then redis.call('EXPIRE', key, ttl) end
end
"""

# The fields of the member record at `mkey`; and, for such a record `rec` of member net:me, take
# its names (those still pointing at it) and its endpoint entry out of the indexes.
RECORD = """
local function record(mkey)
  return redis.call('HMGET', mkey, 'names', 'host', 'port', 'lan', 'nonce', 'last_seen',
                    'expires', 'server')
end
local function unindex(P, net, me, rec)
  for name in string.gmatch(rec[1], '[^,]+') do
    local k = P..'n:'..net..':'..name
    if redis.call('GET', k) == me then redis.call('DEL', k) end
  end
  redis.call('SREM', P..'ep:'..rec[2]..'/'..rec[3], net..':'..me)
end
"""

# Drop every trace of member N:S (names still pointing at it, its endpoint entry, its grants);
# returns its record's fields (empty when there was none).
FORGET = RECORD + """
local function forget_grant(P, id)
  local g = redis.call('HMGET', P..'g:'..id, 'network', 'src', 'dest')
  if g[1] then
    redis.call('DEL', P..'gp:'..g[1]..':'..g[2]..':'..g[3])
    redis.call('SREM', P..'mg:'..g[1]..':'..g[2], id)
    redis.call('SREM', P..'mg:'..g[1]..':'..g[3], id)
  end
  redis.call('DEL', P..'g:'..id)
  redis.call('ZREM', P..'gexp', id)
end
local function forget(P, net, me)
  local mkey = P..'m:'..net..':'..me
  local rec = record(mkey)
  if rec[1] then unindex(P, net, me, rec) end
  for _, id in ipairs(redis.call('SMEMBERS', P..'mg:'..net..':'..me)) do
    forget_grant(P, id)
  end
  redis.call('DEL', mkey, P..'mg:'..net..':'..me)
  redis.call('ZREM', P..'net:'..net, me)
  redis.call('ZREM', P..'exp', net..':'..me)
  if rec[1] then return rec end
  return {}
end
"""

# The live members of network `net`, each as {static, fields}.
LIST = """
local function list(P, net, now_text)
  local out = {}
  for _, me in ipairs(redis.call('ZRANGEBYSCORE', P..'net:'..net, '('..now_text, '+inf')) do
    local rec = record(P..'m:'..net..':'..me)
    if rec[1] then table.insert(out, {me, rec}) end
  end
  return out
end
"""

# KEYS: the counter's key; ARGV: prefix, counter (20 digits), keep_until, ttl. Returns the
# last counter when this one is not above it (nothing changed), else false (kept).
BUMP_FN = """
local function bump(key, P, counter, keep, ttl)
  local cur = redis.call('HGET', key, 'c')
  if cur and cur >= counter then return cur end
  redis.call('HSET', key, 'c', counter, 'keep', keep)
  redis.call('EXPIRE', key, ttl)
  redis.call('ZADD', P..'cexp', keep, key)
  return false
end
"""

# ARGV: prefix, network, static, now, ttl, names, host, port, lan, nonce, last_seen, expires,
# server, max_members (0: no cap), counter ('' for none: not checked), keep_until, counter ttl.
# Returns {'stale', last counter}, {'full'}, {'conflict', name, holder}, or
# {'ok', the replaced live record's fields (or empty), the live members after it (`list`)}.
REGISTER = LIVE + RECORD + LIST + BUMP_FN + """
local P, net, me, now, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
if ARGV[15] ~= '' then
  local last = bump(P..'c:'..net..':'..me, P, ARGV[15], ARGV[16], ARGV[17])
  if last then return {'stale', last} end
end
local cap = tonumber(ARGV[14])
if cap > 0 and not live(P..'m:'..net..':'..me, now) and
   redis.call('ZCOUNT', P..'net:'..net, '('..ARGV[4], '+inf') >= cap then
  return {'full'}
end
local names = {}
for name in string.gmatch(ARGV[6], '[^,]+') do table.insert(names, name) end
for _, name in ipairs(names) do
  local holder = redis.call('GET', P..'n:'..net..':'..name)
  if holder and holder ~= me and live(P..'m:'..net..':'..holder, now) then
    return {'conflict', name, holder}
  end
end
local mkey = P..'m:'..net..':'..me
local prev = {}
local old = record(mkey)
if old[1] then
  if tonumber(old[7]) > now then prev = old end
  unindex(P, net, me, old)
end
for _, name in ipairs(names) do
  redis.call('SET', P..'n:'..net..':'..name, me, 'EX', ttl)
end
redis.call('HSET', mkey, 'names', ARGV[6], 'host', ARGV[7], 'port', ARGV[8], 'lan', ARGV[9],
           'nonce', ARGV[10], 'last_seen', ARGV[11], 'expires', ARGV[12], 'server', ARGV[13])
redis.call('EXPIRE', mkey, ttl)
local ep = P..'ep:'..ARGV[7]..'/'..ARGV[8]
redis.call('SADD', ep, net..':'..me)
longer_ttl(ep, ttl)
redis.call('ZADD', P..'net:'..net, ARGV[12], me)
longer_ttl(P..'net:'..net, ttl)
redis.call('ZADD', P..'exp', ARGV[12], net..':'..me)
if redis.call('EXISTS', P..'mg:'..net..':'..me) == 1 then
  longer_ttl(P..'mg:'..net..':'..me, ttl)
end
return {'ok', prev, list(P, net, ARGV[4])}
"""

# ARGV: prefix, network, static
REMOVE = FORGET + """
return forget(ARGV[1], ARGV[2], ARGV[3])
"""

# ARGV: prefix, now, limit; at most `limit` each of members, counters and grants that ran out:
# returns {the members' records, each as network, static, fields; 1 if there may be more}
EXPIRE = FORGET + """
local P, now, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local out, more = {}, 0
local ids = redis.call('ZRANGEBYSCORE', P..'exp', '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  local sep = string.find(id, ':', 1, true)
  local net, me = string.sub(id, 1, sep - 1), string.sub(id, sep + 1)
  local rec = forget(P, net, me)
  if rec[1] then table.insert(out, {net, me, rec}) end
end
local keys = redis.call('ZRANGEBYSCORE', P..'cexp', '-inf', now, 'LIMIT', 0, limit)
for _, key in ipairs(keys) do
  redis.call('DEL', key)
  redis.call('ZREM', P..'cexp', key)
end
local grants = redis.call('ZRANGEBYSCORE', P..'gexp', '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(grants) do
  forget_grant(P, id)
end
if #ids == limit or #keys == limit or #grants == limit then more = 1 end
return {out, more}
"""

BUMP = BUMP_FN + """
return bump(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"""

# Permit relaying src -> dest of network `net` until `till`: the live grant's token (its expiry
# extended), else `token` stored under `id`. `till` is the exact float text; now and ttl numbers.
GRANT_FN = LIVE + """
local function grant(P, net, src, dest, id_new, token, till, now, ttl)
  local pair = P..'gp:'..net..':'..src..':'..dest
  local id = redis.call('GET', pair)
  if id then
    local g = P..'g:'..id
    local g_until = redis.call('HGET', g, 'until')
    if g_until and tonumber(g_until) > now then
      if tonumber(till) > tonumber(g_until) then
        redis.call('HSET', g, 'until', till)
        redis.call('ZADD', P..'gexp', till, id)
        longer_ttl(g, ttl)
        longer_ttl(pair, ttl)
      end
      return redis.call('HGET', g, 'token')
    end
    redis.call('DEL', g)
    redis.call('ZREM', P..'gexp', id)
    redis.call('SREM', P..'mg:'..net..':'..src, id)
    redis.call('SREM', P..'mg:'..net..':'..dest, id)
  end
  local g = P..'g:'..id_new
  redis.call('HSET', g, 'token', token, 'network', net, 'src', src, 'dest', dest, 'until', till)
  redis.call('EXPIRE', g, ttl)
  redis.call('SET', pair, id_new, 'EX', ttl)
  redis.call('ZADD', P..'gexp', till, id_new)
  for _, side in ipairs({src, dest}) do
    local set = P..'mg:'..net..':'..side
    redis.call('SADD', set, id_new)
    longer_ttl(set, ttl)
  end
  return token
end
"""

# ARGV: prefix, network, src, dest, id, token, until, now, ttl
GRANT = GRANT_FN + """
return grant(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8]),
             tonumber(ARGV[9]))
"""

# ARGV: prefix, network, a, b, id a->b, token a->b, id b->a, token b->a, until, now, ttl;
# returns the two tokens in force, a->b then b->a
GRANT_PAIR = GRANT_FN + """
local P, net, a, b, now, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[10]),
                               tonumber(ARGV[11])
return {grant(P, net, a, b, ARGV[5], ARGV[6], ARGV[9], now, ttl),
        grant(P, net, b, a, ARGV[7], ARGV[8], ARGV[9], now, ttl)}
"""

# ARGV: prefix, network, static, name, counter (20 digits), keep_until, counter ttl. Bumps the
# counter like BUMP; returns {'stale', last counter} or {'ok', the sender's record fields, the
# name's holder ('' for none), the holder's record fields}, records unchecked for liveness.
INTRODUCE = RECORD + BUMP_FN + """
local P, net, me = ARGV[1], ARGV[2], ARGV[3]
local last = bump(P..'c:'..net..':'..me, P, ARGV[5], ARGV[6], ARGV[7])
if last then return {'stale', last} end
local mine = record(P..'m:'..net..':'..me)
local holder = redis.call('GET', P..'n:'..net..':'..ARGV[4])
if not holder then return {'ok', mine, '', {}} end
return {'ok', mine, holder, record(P..'m:'..net..':'..holder)}
"""

# ARGV: prefix, id, now; returns token, network, src, dest, dest host, dest port, dest server
# (or nil)
GRANT_LOOKUP = """
local P, now = ARGV[1], tonumber(ARGV[3])
local g = redis.call('HMGET', P..'g:'..ARGV[2], 'token', 'network', 'src', 'dest', 'until')
if not g[1] or tonumber(g[5]) <= now then return false end
local s = redis.call('HGET', P..'m:'..g[2]..':'..g[3], 'expires')
local d = redis.call('HMGET', P..'m:'..g[2]..':'..g[4], 'expires', 'host', 'port', 'server')
if not s or tonumber(s) <= now or not d[1] or tonumber(d[1]) <= now then return false end
return {g[1], g[2], g[3], g[4], d[2], d[3], d[4] or ''}
"""

# ARGV: prefix, network, now; the live members' statics and fields
MEMBERS = RECORD + LIST + """
return list(ARGV[1], ARGV[2], ARGV[3])
"""

# ARGV: prefix, network, name; the holder's static and record fields, or false
BY_NAME = RECORD + """
local P, net = ARGV[1], ARGV[2]
local holder = redis.call('GET', P..'n:'..net..':'..ARGV[3])
if not holder then return false end
return {holder, record(P..'m:'..net..':'..holder)}
"""

# ARGV: prefix, endpoint text; the records registered from it, each as network, static, fields
AT_ENDPOINT = RECORD + """
local P = ARGV[1]
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', P..'ep:'..ARGV[2])) do
  local sep = string.find(id, ':', 1, true)
  local net, me = string.sub(id, 1, sep - 1), string.sub(id, sep + 1)
  local rec = record(P..'m:'..id)
  if rec[1] then table.insert(out, {net, me, rec}) end
end
return out
"""
