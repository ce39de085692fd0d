"""Replica health shared by the worker processes through a cache (``SCALEOPS_ROUTER_HEALTH_CACHE_ALIAS``).

One process at a time holds a lease and checks the replicas; it publishes what it found (states,
good checks, lag, replay positions with the server they were read from) in one cache key. The
others read that key instead of checking: N workers cost the replicas one set of checks per
interval, so the interval can be short and a standby that is healthy again is back in every
worker within seconds. When the cache is unreachable or the snapshot is stale (the leader died),
a process checks for itself, as without sharing; the lease expires and another process takes it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from typing import Any

from django.core.cache import caches

logger = logging.getLogger("django_scaleops.router")

KEY_PREFIX = "scaleops:router:health"


class SharedHealth:
    """The lease and the snapshot of one pool (one primary and its replica aliases)."""

    def __init__(self, cache_alias: str, settings_dicts: dict[str, dict[str, Any]], interval: float) -> None:
        self.cache_alias = cache_alias
        # Pools over other servers (another project, another settings module) never share a key.
        described = repr(
            sorted((alias, d.get("HOST"), d.get("PORT"), d.get("NAME")) for alias, d in settings_dicts.items())
        )
        digest = hashlib.sha1(described.encode(), usedforsecurity=False).hexdigest()[:16]
        self.lease_key = f"{KEY_PREFIX}:{digest}:lease"
        self.snapshot_key = f"{KEY_PREFIX}:{digest}:snapshot"
        self.token = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self.interval = interval
        self.leading = False
        self.snapshot_at: float | None = None
        self._failing = False

    @property
    def lease_seconds(self) -> int:
        # Outlives a few missed rounds of the leader, so a slow round does not hand it over.
        return max(2, round(self.interval * 3 + 1))

    def lead(self) -> bool:
        """Take or keep the lease; True when this process is to check the replicas now."""
        try:
            cache = caches[self.cache_alias]
            if cache.add(self.lease_key, self.token, self.lease_seconds):
                self.leading = True
            elif cache.get(self.lease_key) == self.token:
                cache.touch(self.lease_key, self.lease_seconds)
                self.leading = True
            else:
                self.leading = False
        except Exception as exc:  # the cache is down: every process checks for itself meanwhile
            self._note_failure(exc)
            self.leading = False
            return True
        self._failing = False
        return self.leading

    def publish(self, snapshot: dict[str, Any]) -> None:
        try:
            caches[self.cache_alias].set(
                self.snapshot_key, {"at": time.time(), "replicas": snapshot}, self.lease_seconds
            )
        except Exception as exc:
            self._note_failure(exc)

    def read(self) -> dict[str, Any] | None:
        """The leader's last snapshot while it is fresh (a few intervals old at most), else None."""
        try:
            value = caches[self.cache_alias].get(self.snapshot_key)
        except Exception as exc:
            self._note_failure(exc)
            return None
        if not isinstance(value, dict) or time.time() - float(value.get("at", 0)) > self.lease_seconds:
            return None
        self.snapshot_at = float(value["at"])
        replicas: dict[str, Any] = value.get("replicas") or {}
        return {"at": self.snapshot_at, "replicas": replicas}

    def role(self) -> str:
        return "leader" if self.leading else "follower"

    def _note_failure(self, exc: BaseException) -> None:
        if not self._failing:
            logger.warning(
                "shared replica health: cache %r failed (%s); this process checks the replicas itself",
                self.cache_alias,
                type(exc).__name__,
            )
        self._failing = True
