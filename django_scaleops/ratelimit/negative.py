"""The shared negative cache: well-formed key prefixes that have no row, remembered in Redis briefly.

Its memory is bounded whatever clients send. Prefixes are spread by CRC32 over
``ceil(SCALEOPS_THROTTLE_NEGATIVE_CACHE_SIZE / 128)`` shard keys (``<REDIS_PREFIX>:nk:<shard>``),
each a sorted set of prefixes scored by their expiry (milliseconds of the Redis clock) that holds
at most 128 members, so Redis keeps every shard in its compact listpack form. Adding to a full
shard drops the members that expire soonest, and each shard key expires
``SCALEOPS_THROTTLE_NEGATIVE_CACHE_TTL`` after its last addition. A flood of random prefixes can
therefore only replace other unknown prefixes: the structure never grows past its bound, and a
key's buckets, usage counters and revocation marker live elsewhere and are never touched.

Every call is best effort: while Redis fails (or the breaker is open) a prefix is simply "not
known" and the caller asks the database.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from typing import Any

from redis.commands.core import Script

from django_scaleops.conf import conf
from django_scaleops.ratelimit.bucket import limiter

SHARD_SIZE = 128  # Redis' default zset-max-listpack-entries: larger shards lose the compact encoding

# KEYS: shard. ARGV: prefix, ttl ms, most members. Drops expired members first, then makes room
# by dropping those that expire soonest *before* adding: a shard that went over 128 members even
# for a moment would leave the listpack encoding for good (and take about four times the memory).
ADD = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3]) + 1
  if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1) end
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""

# KEYS: shard. ARGV: prefix. 1 when the prefix is there and not expired (by the Redis clock).
CONTAINS = """
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expires then return 0 end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if tonumber(expires) > now then return 1 end
return 0
"""

_scripts: dict[str, Script] = {}


def _script(client: Any, text: str) -> Script:
    script = _scripts.get(text)
    if script is None:
        script = _scripts[text] = client.register_script(text)
    return script


def shards() -> int:
    """Number of shard keys; 0 when the negative cache is off."""
    size = int(conf.SCALEOPS_THROTTLE_NEGATIVE_CACHE_SIZE)
    return math.ceil(size / SHARD_SIZE) if size > 0 else 0


def shard_size() -> int:
    """Most members per shard, so that all shards together hold at most the configured size."""
    count = shards()
    return int(conf.SCALEOPS_THROTTLE_NEGATIVE_CACHE_SIZE) // count if count else 0


def shard_key(prefix: str) -> str:
    return f"{conf.SCALEOPS_THROTTLE_REDIS_PREFIX}:nk:{zlib.crc32(prefix.encode('ascii')) % shards()}"


def contains(prefix: str) -> bool:
    """Whether ``prefix`` is known to have no row (one Redis round trip; False when unsure)."""
    if not shards():
        return False
    found = limiter.call(
        lambda client: _script(client, CONTAINS)(keys=[shard_key(prefix)], args=[prefix], client=client)
    )
    return bool(found)


def add(prefix: str) -> None:
    """Remember that ``prefix`` has no row, for ``SCALEOPS_THROTTLE_NEGATIVE_CACHE_TTL`` seconds."""
    if not shards():
        return
    ttl_ms = max(1, int(float(conf.SCALEOPS_THROTTLE_NEGATIVE_CACHE_TTL) * 1000))
    args: list[str | int] = [prefix, ttl_ms, shard_size()]
    limiter.call(lambda client: _script(client, ADD)(keys=[shard_key(prefix)], args=args, client=client))


def forget(prefixes: Iterable[str], pipe: Any) -> None:
    """Queue the removal of ``prefixes`` (keys just created or changed) on a Redis pipeline."""
    if not shards():
        return
    for prefix in prefixes:
        pipe.zrem(shard_key(prefix), prefix)
