"""Access to Redis through django-redis, with the failure policy: a Redis error never fails a read.

When a call fails, the gate logs once, counts it, and stays open (every caller reads the database
directly) for ``SCALEOPS_CACHE_BREAKER_COOLDOWN`` seconds; the next call after that tries Redis again.
Invalidations that could not reach Redis are owed and paid before the cache is used again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django.core.cache import caches
from django_redis import get_redis_connection
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisClusterException, RedisError

from django_scaleops.cache import scripts, stats
from django_scaleops.conf import conf
from django_scaleops.derived_keys import derived_key
from django_scaleops.redis_cluster.client import ClusterClient, is_cluster

logger = logging.getLogger("django_scaleops.cache")

T = TypeVar("T")

# RedisClusterException (no node reachable, slot not covered) is not a RedisError.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, ConnectionInterrupted, OSError)

STAMPS = "stamps"  # on a Redis Cluster, the hash tag group of every stamp and of the L1 channel


class RedisUnavailable(Exception):
    """Redis failed or is in its retry pause; the caller reads the database instead."""


class UnsignedValue(ValueError):
    """With ``SCALEOPS_CACHE_SIGNING_KEY`` set, a stored value whose HMAC does not check out."""


SIGNED = b"scaleops-hmac1:"
MAC_BYTES = 32


def signing_key() -> bytes | None:
    """The HMAC key of cached values, derived from ``SCALEOPS_CACHE_SIGNING_KEY`` (None: unsigned)."""
    secret = conf.SCALEOPS_CACHE_SIGNING_KEY
    return derived_key(secret, "django-scaleops cache values") if secret else None


def new_seed() -> str:
    # A stamp starts at a random 48-bit value, far from any value an earlier life of it reached.
    return str(secrets.randbits(48))


class Gate:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._down = False
        self._owed: set[str] = set()
        self._owed_lock = threading.Lock()
        self.flush_hooks: list[Callable[[], None]] = []
        # The L1 channel, so bumps owed during an outage are broadcast when they are paid.
        self.channel: Callable[[], str] = lambda: ""
        self._scripts: dict[str, Any] = {}
        self._stamp_keys: dict[tuple[str, str, str], str] = {}
        # Stamp key -> the version this process last read: the guess of read_hit(), always checked.
        self._versions: dict[str, str] = {}
        self.config_version = 0

    # ---- plumbing

    @property
    def cache(self) -> Any:
        return caches[conf.SCALEOPS_CACHE_ALIAS]

    def client(self) -> Any:
        return get_redis_connection(conf.SCALEOPS_CACHE_ALIAS)

    def key(self, name: str) -> str:
        """``name`` under the cache's KEY_PREFIX/VERSION and our own prefix."""
        made: str = self.cache.make_key(f"{conf.SCALEOPS_CACHE_PREFIX}:{name}")
        return made

    def clustered(self) -> bool:
        """True when the cache is a Redis Cluster (``ClusterClient``): keys then carry hash tags."""
        return isinstance(getattr(self.cache, "client", None), ClusterClient)

    def slot_key(self, group: str, name: str) -> str:
        """Like :meth:`key`; on a Redis Cluster every key of ``group`` shares one hash slot."""
        if not self.clustered():
            return self.key(name)
        made: str = self.cache.make_key(f"{{{conf.SCALEOPS_CACHE_PREFIX}:{group}}}:{name}")
        return made

    def stamp_key(self, name: str) -> str:
        """Like :meth:`key`, memoised: stamp names are few (tables) and read on every lookup.

        On a Redis Cluster every stamp is in one slot, so one script reads (or bumps) them all.
        """
        slot = (conf.SCALEOPS_CACHE_ALIAS, conf.SCALEOPS_CACHE_PREFIX, name)
        made = self._stamp_keys.get(slot)
        if made is None:
            if len(self._stamp_keys) > 50_000:  # row stamps are many: keep the memo bounded
                self._stamp_keys.clear()
            made = self._stamp_keys[slot] = self.slot_key(STAMPS, name)
        return made

    def entry_key(self, name: str) -> str:
        """The base key of an entry; on a Redis Cluster its versions and lease share its slot."""
        if not self.clustered():
            return self.key(name)
        kind, _, rest = name.partition(":")
        tag = rest.replace("{", "").replace("}", "") or "-"
        return self.key(f"{kind}:{{{tag}}}")

    def forget_keys(self, setting: str = "", **kwargs: Any) -> None:
        """``setting_changed`` receiver: a new cache configuration may make other keys."""
        if setting in ("CACHES", "SCALEOPS_CACHE_ALIAS", "SCALEOPS_CACHE_PREFIX", ""):
            self._stamp_keys.clear()
            self._versions.clear()
            # Another Redis (or channel): the L1 listener subscribes again, L1 is off meanwhile.
            self.config_version += 1

    def encode(self, value: Any) -> bytes:
        # The cache's own serializer and compressor (CACHES OPTIONS), so compression is configured there.
        encoded: bytes = self.cache.client.encode(value, allow_int=False)
        key = signing_key()
        if key is None:
            return encoded
        return SIGNED + hmac.new(key, encoded, hashlib.sha256).digest() + encoded

    def decode(self, raw: bytes) -> Any:
        key = signing_key()
        if key is not None:
            # Checked before anything is decompressed or unpickled: a value someone wrote into
            # Redis without the key is never deserialised.
            body = raw[len(SIGNED) + MAC_BYTES :]
            mac = raw[len(SIGNED) : len(SIGNED) + MAC_BYTES]
            if not raw.startswith(SIGNED) or not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
                raise UnsignedValue("a cached value without a valid signature was ignored")
            raw = body
        return self.cache.client.decode(raw)

    def _run(self, client: Any, source: str, keys: list[str], args: list[Any]) -> Any:
        # EVALSHA on the given client (loading the script on a NOSCRIPT reply, e.g. after a restart).
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = client.register_script(source)
        return script(keys=keys, args=args, client=client)

    def is_open(self) -> bool:
        """True while Redis is considered down (callers go straight to the database)."""
        return self._down and time.monotonic() < self._down_until

    def call(self, operation: Callable[[Any], T]) -> T:
        """Run ``operation(redis_client)`` under the failure policy."""
        if self.is_open():
            raise RedisUnavailable
        try:
            client = self.client()
        except Exception as exc:  # misconfigured cache alias (see checks E301/E302): never fail a read
            self._fail(exc)
            raise RedisUnavailable from exc
        try:
            if self._down or self._owed:
                self._recover(client)
            return operation(client)
        except REDIS_ERRORS as exc:
            self._fail(exc)
            raise RedisUnavailable from exc

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            first = not self._down
            self._down = True
            self._down_until = time.monotonic() + float(conf.SCALEOPS_CACHE_BREAKER_COOLDOWN)
        stats.incr("_redis", "redis_errors")
        stats.set_redis_available(False)
        if first:
            logger.warning(
                "Redis cache unreachable (%s); reading from the database, retrying every %ss",
                type(exc).__name__,
                conf.SCALEOPS_CACHE_BREAKER_COOLDOWN,
            )
        for hook in self.flush_hooks:  # local tiers cannot hear invalidations now: drop them
            hook()

    def _recover(self, client: Any) -> None:
        with self._owed_lock:
            owed = sorted(self._owed)
        if owed:
            self._bump(client, owed, self.channel(), json.dumps(owed))
            with self._owed_lock:
                self._owed.difference_update(owed)
        if self._down:
            with self._lock:
                was_down, self._down = self._down, False
            if was_down:
                stats.set_redis_available(True)
                logger.warning("Redis cache reachable again; %d owed invalidations applied", len(owed))
                for hook in self.flush_hooks:
                    hook()

    # ---- operations

    def read_hit(self, stamps: list[str], base: str) -> tuple[str, bytes] | None:
        """A hit in one plain ``MGET`` of the stamps and the entry, or None (then :meth:`read`).

        The entry's full key is built from the versions of the stamps last seen by this process,
        and the same ``MGET`` reads the stamps themselves: the value counts only if they still
        hold those versions, which is what the ``READ`` script would have found. A guess that is
        out of date (a write bumped a stamp), a stamp never seen, a miss or a Redis Cluster
        (stamps and entry are in two slots) take the script instead.
        """
        versions = self._versions
        guess = [versions.get(stamp) for stamp in stamps]
        if None in guess:
            return None
        full = base + "@" + ".".join(guess)  # type: ignore[arg-type]

        def run(client: Any) -> tuple[str, bytes] | None:
            if is_cluster(client):
                return None
            *current, raw = client.mget(*stamps, full)
            for stamp, seen, now in zip(stamps, guess, current, strict=True):
                if now is None or now.decode() != seen:
                    versions.pop(stamp, None)
                    return None
            return (full, raw) if raw is not None else None

        return self.call(run)

    def _remember_versions(self, stamps: list[str], full: str) -> None:
        if len(self._versions) > 50_000:  # row stamps are many: keep the memo bounded
            self._versions.clear()
        self._versions.update(zip(stamps, full.rsplit("@", 1)[1].split("."), strict=True))

    def read(self, stamps: list[str], base: str, token: str) -> tuple[str, bytes | None, int, bool]:
        def run(client: Any) -> tuple[str, bytes | None, int, bool]:
            if is_cluster(client):
                return self._cluster_read(client, stamps, base, token)
            full, raw, pttl, leased = self._run(
                client, scripts.READ, stamps, [base, token, conf.SCALEOPS_CACHE_LEASE_TIMEOUT_MS, new_seed()]
            )
            full = full.decode()
            self._remember_versions(stamps, full)
            return full, raw, int(pttl), bool(leased)

        return self.call(run)

    def _cluster_read(
        self, client: Any, stamps: list[str], base: str, token: str
    ) -> tuple[str, bytes | None, int, bool]:
        # Two scripts, one per slot: the stamps, then the entry they name. A bump between them
        # only means this read used the stamps of a moment earlier, as a read racing a write does.
        versions = self._run(client, scripts.CLUSTER_STAMPS, stamps, [new_seed()])
        full = base + "@" + ".".join(v.decode() for v in versions)
        raw, pttl, leased = self._run(
            client, scripts.CLUSTER_READ, [full, f"{full}:lease"], [token, conf.SCALEOPS_CACHE_LEASE_TIMEOUT_MS]
        )
        return full, raw or None, int(pttl), bool(leased)

    def _cluster_store(self, client: Any, stamps: list[str], full: str, token: str, raw: bytes | str, px: int) -> int:
        # The stamps are checked before the set, not atomically with it: a bump landing between
        # the two leaves the value under the old versions' key, which no reader builds any more
        # (readers read the stamps first), so it is never served and expires.
        if raw != "":
            versions = client.mget(*stamps)
            if any(v is None for v in versions) or full != full.rsplit("@", 1)[0] + "@" + ".".join(
                v.decode() for v in versions
            ):
                self._run(client, scripts.CLUSTER_STORE, [full, f"{full}:lease"], [token, "", 0])
                return 0
        return int(self._run(client, scripts.CLUSTER_STORE, [full, f"{full}:lease"], [token, raw, px]))

    def try_lease(self, full: str, token: str) -> bool:
        return bool(
            self.call(lambda c: c.set(f"{full}:lease", token, nx=True, px=conf.SCALEOPS_CACHE_LEASE_TIMEOUT_MS))
        )

    def store(self, stamps: list[str], full: str, token: str, raw: bytes, px: int) -> int:
        def run(client: Any) -> int:
            if is_cluster(client):
                return self._cluster_store(client, stamps, full, token, raw, px)
            return int(self._run(client, scripts.STORE, stamps, [full, token, raw, px]))

        return self.call(run)

    def release(self, stamps: list[str], full: str, token: str) -> None:
        def run(client: Any) -> None:
            if is_cluster(client):
                self._cluster_store(client, stamps, full, token, "", 0)
            else:
                self._run(client, scripts.STORE, stamps, [full, token, "", 0])

        self.call(run)

    def bump(self, stamps: Iterable[str], channel: str, message: str) -> None:
        """Bump stamps now; if Redis is unreachable they are owed and bumped on recovery."""
        keys = sorted(set(stamps))
        if not keys:
            return
        try:
            self.call(lambda c: self._bump(c, keys, channel, message))
        except RedisUnavailable:
            with self._owed_lock:
                self._owed.update(keys)

    def _bump(self, client: Any, keys: list[str], channel: str, message: str) -> None:
        # On a Redis Cluster the stamps share one slot, and the L1 channel is a shard channel of it.
        self._run(
            client, scripts.CLUSTER_BUMP if is_cluster(client) else scripts.BUMP, keys, [new_seed(), channel, message]
        )

    def delete(self, stamps: list[str], base: str, channel: str, message: str) -> None:
        def run(client: Any) -> None:
            if not is_cluster(client):
                self._run(client, scripts.DELETE, stamps, [base, channel, message])
                return
            versions = client.mget(*stamps)
            if any(v is None for v in versions):
                return
            client.delete(base + "@" + ".".join(v.decode() for v in versions))
            if channel:
                client.spublish(channel, message)

        self.call(run)

    def reset_state(self) -> None:
        """Forget an outage and owed bumps (tests, and after the cache was flushed by hand)."""
        with self._lock:
            self._down = False
            self._down_until = 0.0
        with self._owed_lock:
            self._owed.clear()


gate = Gate()
