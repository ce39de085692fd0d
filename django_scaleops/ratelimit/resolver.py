"""Raw key -> key id and tier, from a small in-process cache so warm requests query no database."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from django_scaleops.conf import conf
from django_scaleops.ratelimit.keys import matches, parse_prefix
from django_scaleops.ratelimit.policy import Policy

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


class KeyCache:
    """prefix -> (ResolvedKey or None for "no such key", time loaded), bounded, with a short TTL."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[ResolvedKey | None, float]] = {}
        self._max_entries = max_entries

    def get(self, prefix: str) -> Any:
        entry = self._entries.get(prefix)
        if entry is None or time.monotonic() - entry[1] > float(conf.SCALEOPS_THROTTLE_KEY_CACHE_TTL):
            return _MISSING
        return entry[0]

    def put(self, prefix: str, value: ResolvedKey | None) -> None:
        with self._lock:
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            self._entries[prefix] = (value, time.monotonic())

    def evict(self, prefix: str) -> None:
        with self._lock:
            self._entries.pop(prefix, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


key_cache = KeyCache()


def _load(prefix: str) -> ResolvedKey | None:
    from django_scaleops.models import ApiKey

    row = ApiKey.objects.select_related("tier").filter(prefix=prefix).first()
    return _to_resolved(row)


async def _aload(prefix: str) -> ResolvedKey | None:
    from django_scaleops.models import ApiKey

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


def resolve(raw: str) -> ResolvedKey:
    """The key behind ``raw``; raises KeyRejected (never a database error for bad input)."""
    prefix = parse_prefix(raw)
    if prefix is None:
        raise KeyRejected(INVALID)
    cached = key_cache.get(prefix)
    if cached is _MISSING:
        cached = _load(prefix)
        key_cache.put(prefix, cached)
    return _verify(raw, cached)


async def aresolve(raw: str) -> ResolvedKey:
    prefix = parse_prefix(raw)
    if prefix is None:
        raise KeyRejected(INVALID)
    cached = key_cache.get(prefix)
    if cached is _MISSING:
        cached = await _aload(prefix)
        key_cache.put(prefix, cached)
    return _verify(raw, cached)
