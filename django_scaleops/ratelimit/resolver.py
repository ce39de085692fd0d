"""Raw key -> key id and tier, from a small in-process cache so warm requests query no database.

A prefix the process has not cached goes through the failed-authentication guard of its address
(``guard``), then the shared negative cache in Redis (``negative``), and only then the database.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from django.utils import timezone

from django_scaleops.conf import conf
from django_scaleops.ratelimit import guard, negative
from django_scaleops.ratelimit.addresses import client_ip
from django_scaleops.ratelimit.keys import matches, parse_prefix
from django_scaleops.ratelimit.policy import Policy

T = TypeVar("T")

INVALID = "invalid"
UNKNOWN = "unknown"
REVOKED = "revoked"
EXPIRED = "expired"

MESSAGES = {
    INVALID: "The API key is malformed.",
    UNKNOWN: "The API key is not valid.",
    REVOKED: "The API key has been revoked.",
    EXPIRED: "The API key has expired.",
}


@dataclass(frozen=True)
class ResolvedKey:
    """What a request needs to know about its key; never holds the secret."""

    id: int
    name: str
    prefix: str
    policy: Policy
    hashed: str
    revoked: bool
    expires_at: datetime | None


class KeyRejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(MESSAGES[reason])
        self.reason = reason


_MISSING = object()

# Unknown prefixes kept in process (apart from the keys, so they never push one out).
UNKNOWN_CACHE_SIZE = 10_000


class _LRU:
    """prefix -> (value, time stored), least recently used first, never emptied whole when full."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[Any, float]] = OrderedDict()

    def get(self, prefix: str, ttl: float) -> Any:
        entry = self._entries.get(prefix)  # lock-free: the hot path of every request
        if entry is None or time.monotonic() - entry[1] > ttl:
            return _MISSING
        try:  # noqa: SIM105 (contextlib.suppress costs more than the rest of this method)
            # One C call, atomic under the GIL: no lock of ours on the hot path.
            self._entries.move_to_end(prefix)
        except KeyError:  # evicted meanwhile by another thread
            pass
        return entry[0]

    def put(self, prefix: str, value: Any, max_entries: int) -> None:
        with self._lock:
            self._entries[prefix] = (value, time.monotonic())
            self._entries.move_to_end(prefix)
            while len(self._entries) > max(1, max_entries):
                self._entries.popitem(last=False)

    def evict(self, prefix: str) -> None:
        with self._lock:
            self._entries.pop(prefix, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, prefix: str) -> bool:
        return prefix in self._entries


class KeyCache:
    """The in-process key cache: prefix -> ResolvedKey, or None for "no such key".

    Two bounded LRUs: keys (``SCALEOPS_THROTTLE_KEY_CACHE_SIZE``, for ``SCALEOPS_THROTTLE_KEY_CACHE_TTL``)
    and unknown prefixes (``UNKNOWN_CACHE_SIZE``, for ``SCALEOPS_THROTTLE_NEGATIVE_CACHE_TTL``). Only
    a prefix that has a row can enter the first, so a flood of random keys never evicts a real one.
    """

    def __init__(self) -> None:
        self.keys = _LRU()
        self.unknown = _LRU()

    def get(self, prefix: str) -> Any:
        found = self.keys.get(prefix, float(conf.SCALEOPS_THROTTLE_KEY_CACHE_TTL))
        if found is _MISSING and prefix not in self.keys:
            found = self.unknown.get(prefix, float(conf.SCALEOPS_THROTTLE_NEGATIVE_CACHE_TTL))
        return found

    def put(self, prefix: str, value: ResolvedKey | None) -> None:
        if value is None:
            self.keys.evict(prefix)
            self.unknown.put(prefix, None, UNKNOWN_CACHE_SIZE)
        else:
            self.unknown.evict(prefix)
            self.keys.put(prefix, value, int(conf.SCALEOPS_THROTTLE_KEY_CACHE_SIZE))

    def evict(self, prefix: str) -> None:
        self.keys.evict(prefix)
        self.unknown.evict(prefix)

    def clear(self) -> None:
        self.keys.clear()
        self.unknown.clear()


key_cache = KeyCache()


def _load(prefix: str) -> ResolvedKey | None:
    from django_scaleops.ratelimit.models import ApiKey

    row = ApiKey.objects.select_related("tier").filter(prefix=prefix).first()
    return _to_resolved(row)


async def _aload(prefix: str) -> ResolvedKey | None:
    from django_scaleops.ratelimit.models import ApiKey

    row = await ApiKey.objects.select_related("tier").filter(prefix=prefix).afirst()
    return _to_resolved(row)


def _to_resolved(row: Any) -> ResolvedKey | None:
    if row is None:
        return None
    return ResolvedKey(
        id=row.pk,
        name=row.name,
        prefix=row.prefix,
        policy=row.tier.policy(),
        hashed=row.hashed_key,
        revoked=row.revoked_at is not None,
        expires_at=row.expires_at,
    )


def _verify(raw: str, resolved: ResolvedKey | None) -> ResolvedKey:
    if resolved is None or not matches(raw, resolved.hashed):
        raise KeyRejected(UNKNOWN)
    if resolved.revoked:
        raise KeyRejected(REVOKED)
    if resolved.expires_at is not None and resolved.expires_at <= timezone.now():
        raise KeyRejected(EXPIRED)
    return resolved


def _address(request: HttpRequest) -> str:
    return client_ip(request)


def _lookup(prefix: str, request: HttpRequest | None) -> ResolvedKey | None:
    """A prefix this process has not cached: guard, then the shared negative cache, then the database."""
    if request is not None:
        guard.ensure_allowed(_address(request))  # 429 before anything is looked up for a blocked address
    if negative.contains(prefix):
        key_cache.put(prefix, None)
        return None
    resolved = _load(prefix)
    key_cache.put(prefix, resolved)
    if resolved is None:
        negative.add(prefix)
    return resolved


async def _alookup(prefix: str, request: HttpRequest | None) -> ResolvedKey | None:
    # Redis calls (synchronous redis-py) in a worker thread; the database through Django's async ORM.
    if request is not None:
        await _off_loop(guard.ensure_allowed)(_address(request))
    if await _off_loop(negative.contains)(prefix):
        key_cache.put(prefix, None)
        return None
    resolved = await _aload(prefix)
    key_cache.put(prefix, resolved)
    if resolved is None:
        await _off_loop(negative.add)(prefix)
    return resolved


def _off_loop(func: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    return sync_to_async(func, thread_sensitive=False)


def resolve(raw: str, request: HttpRequest | None = None) -> ResolvedKey:
    """The key behind ``raw``; raises KeyRejected (never a database error for bad input).

    With the ``request`` that presented it, failures are counted per client address and
    ``guard.AuthThrottled`` is raised once they exceed ``SCALEOPS_THROTTLE_AUTH_FAILURE_RATE``;
    a key already cached and valid costs nothing more.
    """
    try:
        prefix = parse_prefix(raw)
        if prefix is None:
            raise KeyRejected(INVALID)
        cached = key_cache.get(prefix)
        if cached is _MISSING:
            cached = _lookup(prefix, request)
        return _verify(raw, cached)
    except KeyRejected:
        if request is not None:
            guard.record_failure(_address(request))
        raise


async def aresolve(raw: str, request: HttpRequest | None = None) -> ResolvedKey:
    try:
        prefix = parse_prefix(raw)
        if prefix is None:
            raise KeyRejected(INVALID)
        cached = key_cache.get(prefix)
        if cached is _MISSING:
            cached = await _alookup(prefix, request)
        return _verify(raw, cached)
    except KeyRejected:
        if request is not None:
            await _off_loop(guard.record_failure)(_address(request))
        raise
