"""The Lua scripts: each runs atomically in Redis, so a read, a lease and a set never interleave."""

from __future__ import annotations

# KEYS: the version stamps the entry depends on. ARGV: base key, lease token ("" = none),
# lease ms, seed for missing stamps. A missing stamp (first use, eviction, Redis restarted empty)
# gets a fresh random seed, so entries written under an earlier life of the stamp never match.
# Returns {full key, value or false, PTTL of the value, 1 if the caller now holds the lease}.
READ = """
local versions = redis.call('MGET', unpack(KEYS))
for i, v in ipairs(versions) do
  if not v then
    redis.call('SET', KEYS[i], ARGV[4], 'NX')
    versions[i] = redis.call('GET', KEYS[i])
  end
end
local full = ARGV[1] .. '@' .. table.concat(versions, '.')
local value = redis.call('GET', full)
local pttl = -2
if value then pttl = redis.call('PTTL', full) end
local leased = 0
if ARGV[2] ~= '' and not value then
  if redis.call('SET', full .. ':lease', ARGV[2], 'NX', 'PX', ARGV[3]) then leased = 1 end
end
return {full, value, pttl, leased}
"""

# KEYS: the stamps read with the entry. ARGV: full key read, lease token, value ("" = release
# only), PX. Stores only if every stamp is unchanged (a write in between voids the lease) and the
# lease is still ours. Returns 1 stored, 0 voided by a write, -1 lease lost, 2 released.
STORE = """
local versions = redis.call('MGET', unpack(KEYS))
local lease = ARGV[1] .. ':lease'
local ours = redis.call('GET', lease) == ARGV[2]
if ours then redis.call('DEL', lease) end
if ARGV[3] == '' then return 2 end
for i, v in ipairs(versions) do
  if not v then return 0 end
end
local base = string.match(ARGV[1], '^(.*)@[^@]*$')
if base .. '@' .. table.concat(versions, '.') ~= ARGV[1] then return 0 end
if not ours then return -1 end
redis.call('SET', ARGV[1], ARGV[3], 'PX', ARGV[4])
return 1
"""

# KEYS: stamps to bump. ARGV: seed for missing stamps, pub/sub channel ("" = none), message.
# One round trip whatever the number of cached entries: old entries become unreachable and expire.
BUMP = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then redis.call('INCR', key) else redis.call('SET', key, ARGV[1]) end
end
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return #KEYS
"""

# KEYS: the stamps of one entry. ARGV: base key, channel, message. Deletes that one entry.
DELETE = """
local versions = redis.call('MGET', unpack(KEYS))
for i, v in ipairs(versions) do
  if not v then return 0 end
end
local deleted = redis.call('DEL', ARGV[1] .. '@' .. table.concat(versions, '.'))
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return deleted
"""

# ---- Redis Cluster: a script may touch one slot only. The stamps share one hash tag (one slot),
# and an entry, its versions and its lease share the entry's tag; a read is then two scripts, one
# per slot, and a store checks the stamps before it sets (see docs/cache.md, "Redis Cluster").

# KEYS: the stamps (one slot). ARGV: seed for missing stamps. Returns their values.
CLUSTER_STAMPS = """
local versions = redis.call('MGET', unpack(KEYS))
for i, v in ipairs(versions) do
  if not v then
    redis.call('SET', KEYS[i], ARGV[1], 'NX')
    versions[i] = redis.call('GET', KEYS[i])
  end
end
return versions
"""

# KEYS: full key, its lease (one slot). ARGV: lease token ("" = none), lease ms.
# Returns {value or false, PTTL of the value, 1 if the caller now holds the lease}.
CLUSTER_READ = """
local value = redis.call('GET', KEYS[1])
local pttl = -2
if value then pttl = redis.call('PTTL', KEYS[1]) end
local leased = 0
if ARGV[1] ~= '' and not value then
  if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then leased = 1 end
end
return {value, pttl, leased}
"""

# KEYS: full key, its lease. ARGV: lease token, value ("" = release only), PX.
# Returns 1 stored, -1 lease lost, 2 released (the stamps were checked just before).
CLUSTER_STORE = """
local ours = redis.call('GET', KEYS[2]) == ARGV[1]
if ours then redis.call('DEL', KEYS[2]) end
if ARGV[2] == '' then return 2 end
if not ours then return -1 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

# KEYS: stamps to bump (one slot). ARGV: seed for missing stamps, shard channel in the stamps'
# slot ("" = none), message. Like BUMP, with sharded pub/sub (SPUBLISH, Redis 7).
CLUSTER_BUMP = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then redis.call('INCR', key) else redis.call('SET', key, ARGV[1]) end
end
if ARGV[2] ~= '' then redis.call('SPUBLISH', ARGV[2], ARGV[3]) end
return #KEYS
"""
