"""The optional in-process L1 tier, kept consistent by a Redis pub/sub invalidation broadcast.

Entries live ``SCALEOPS_CACHE_L1_TIMEOUT`` seconds at most. Every stamp bump is published on one
channel; a daemon thread per process listens and drops the entries depending on the bumped stamps.
L1 is used only while that subscription is live: on disconnect and on reconnect it is flushed
whole, since broadcasts may have been missed in between.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Any

from django_scaleops.cache.backend import REDIS_ERRORS, STAMPS, gate
from django_scaleops.conf import conf
from django_scaleops.redis_cluster.client import is_cluster

logger = logging.getLogger("django_scaleops.cache")

_MISSING = object()


class LocalTier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, Any, tuple[str, ...]]] = OrderedDict()
        self._by_stamp: dict[str, set[str]] = {}
        # Bumped on every invalidation heard: a value read from Redis before an invalidation
        # arrived must not be put into L1 after it.
        self.generation = 0
        self.live = False
        self.config = -1  # the gate's config_version this subscription listens under
        self._thread: threading.Thread | None = None

    def get(self, key: str) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return _MISSING
            if entry[0] < time.monotonic():
                self._forget(key)
                return _MISSING
            return entry[1]

    def put(self, key: str, value: Any, stamps: list[str], generation: int, ttl: float) -> None:
        with self._lock:
            if generation != self.generation or not self.live:
                return
            self._forget(key)
            self._entries[key] = (time.monotonic() + ttl, value, tuple(stamps))
            for stamp in stamps:
                self._by_stamp.setdefault(stamp, set()).add(key)
            while len(self._entries) > conf.SCALEOPS_CACHE_L1_MAX_ENTRIES:
                self._forget(next(iter(self._entries)))

    def _forget(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry:
            for stamp in entry[2]:
                keys = self._by_stamp.get(stamp)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._by_stamp[stamp]

    def drop_stamps(self, stamps: list[str]) -> None:
        with self._lock:
            self.generation += 1
            for stamp in stamps:
                for key in list(self._by_stamp.get(stamp, ())):
                    self._forget(key)

    def drop_key(self, key: str) -> None:
        with self._lock:
            self.generation += 1
            self._forget(key)

    def flush(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()
            self._by_stamp.clear()

    def __len__(self) -> int:
        return len(self._entries)

    # ---- the subscriber

    def ensure_listening(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._listen, name="scaleops-cache-l1", daemon=True)
                    self._thread.start()

    def _listen(self) -> None:
        delay = 0.1
        while True:
            pubsub = None
            try:
                config = gate.config_version
                client = gate.client()
                sharded = is_cluster(client)
                pubsub = client.pubsub(ignore_subscribe_messages=False)
                if sharded:  # Redis Cluster: sharded pub/sub on the node serving the channel's slot
                    pubsub.ssubscribe(channel())
                else:
                    pubsub.subscribe(channel())
                while True:
                    read = pubsub.get_sharded_message if sharded else pubsub.get_message
                    message = read(timeout=1.0)
                    if config != gate.config_version:
                        raise ConnectionError("the cache configuration changed")
                    if message is None:
                        continue
                    kind = message["type"]
                    kind = kind.decode() if isinstance(kind, bytes) else kind
                    if kind in ("subscribe", "ssubscribe"):
                        self.flush()
                        self.config = config
                        self.live = True
                        delay = 0.1
                    elif kind in ("message", "smessage"):
                        self._hear(message["data"])
                    elif kind == "sunsubscribe":
                        # The slot moved to another master (reshard, failover): broadcasts may be
                        # missed until we subscribe there, so L1 goes off and is flushed.
                        raise ConnectionError("the L1 shard channel moved")
            except REDIS_ERRORS as exc:
                if self.live:
                    logger.warning("L1 invalidation channel lost (%s); L1 off until it is back", type(exc).__name__)
                self.live = False
                self.flush()
            finally:
                if pubsub is not None:
                    with contextlib.suppress(*REDIS_ERRORS):
                        pubsub.close()
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _hear(self, data: bytes) -> None:
        payload = json.loads(data)
        if isinstance(payload, dict):
            self.drop_key(str(payload["key"]))
        else:
            self.drop_stamps([str(s) for s in payload])


tier = LocalTier()
gate.flush_hooks.append(tier.flush)


def _after_fork_in_child() -> None:
    # A forked worker (gunicorn --preload) has no listener thread: L1 waits for its own subscription.
    tier.live = False
    tier._thread = None
    tier._lock = threading.Lock()
    tier.flush()


os.register_at_fork(after_in_child=_after_fork_in_child)
gate.channel = lambda: channel() if enabled() else ""


def enabled() -> bool:
    return float(conf.SCALEOPS_CACHE_L1_TIMEOUT) > 0


def channel() -> str:
    # On a Redis Cluster, a shard channel (SPUBLISH) in the stamps' slot: the bump script publishes it.
    return gate.slot_key(STAMPS, "l1-invalidate")


def usable() -> bool:
    """L1 is on and its invalidation channel is live (starting the listener on first use)."""
    if not enabled():
        return False
    tier.ensure_listening()
    return tier.live and tier.config == gate.config_version


def drop_stamps(stamps: list[str]) -> None:
    tier.drop_stamps(stamps)
