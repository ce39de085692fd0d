"""Cache-aside with leases and XFetch: the read path every cached queryset and function takes.

A hit is one plain ``MGET`` of the entry's version stamps and of the versioned key built from the
versions this process last saw (``Gate.read_hit``). Otherwise a read is one Lua call: it reads the
stamps, builds the versioned key and gets the value, and on a miss hands the caller a lease. Only
the lease holder reads the database; the others poll briefly for its result, take a stale value if
one exists, or read the database themselves after ``SCALEOPS_CACHE_LEASE_WAIT_MS``. The holder's
set is refused when any stamp moved since the read (a write landed in between), so a result fetched
before a write is never stored. Before expiry, XFetch (Vattani et al., VLDB 2015) lets one caller
refresh early with a probability that grows as expiry nears and with the cost of the fetch.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.utils.module_loading import import_string

from django_scaleops.cache import cluster, l1, stats
from django_scaleops.cache.backend import RedisUnavailable, UnsignedValue, gate
from django_scaleops.cache.invalidation import wrote_in_transaction
from django_scaleops.conf import conf

T = TypeVar("T")

logger = logging.getLogger("django_scaleops.cache")

FreshnessHook = Callable[[frozenset[str], str | None], bool]

_refreshing: contextvars.ContextVar[bool] = contextvars.ContextVar("scaleops_cache_refreshing", default=False)
_freshness_hooks: list[FreshnessHook] = []


@dataclass(frozen=True)
class Entry:
    """What to look up: the base key, the stamps it depends on, for how long, and its stats prefix."""

    base: str
    stamps: list[str]
    timeout: int
    prefix: str
    tables: frozenset[str] = field(default_factory=frozenset)
    using: str | None = None


def register_freshness_hook(hook: FreshnessHook) -> None:
    """Let the read-replica router say a read must be fresh (it would send it to the primary).

    ``hook(tables, using)`` returns True to bypass the cache for that read: it then goes to the
    database (where the router sends it) and is not stored. See docs/cache.md.
    """
    if hook not in _freshness_hooks:
        _freshness_hooks.append(hook)


def unregister_freshness_hook(hook: FreshnessHook) -> None:
    with contextlib.suppress(ValueError):
        _freshness_hooks.remove(hook)


def _needs_fresh(entry: Entry) -> bool:
    hooks = list(_freshness_hooks)
    if conf.SCALEOPS_CACHE_FRESHNESS_HOOK:
        hooks.append(import_string(conf.SCALEOPS_CACHE_FRESHNESS_HOOK))
    return any(hook(entry.tables, entry.using) for hook in hooks)


@contextlib.contextmanager
def refreshing() -> Iterator[None]:
    """Within this block cached reads skip the lookup and store a fresh result (cache warmers)."""
    token = _refreshing.set(True)
    try:
        yield
    finally:
        _refreshing.reset(token)


def cache_is_off(prefix: str) -> bool:
    """True while ``SCALEOPS_CACHE_ENABLED`` is False: the caller reads the database (said once)."""
    if conf.SCALEOPS_CACHE_ENABLED:
        return False
    if not _said_off:
        _said_off.append(True)
        logger.warning(
            "cached read of %s while SCALEOPS_CACHE_ENABLED is False: cached reads go to the database", prefix
        )
    return True


def _bypass(entry: Entry) -> bool:
    return cache_is_off(entry.prefix) or wrote_in_transaction() or _needs_fresh(entry)


_said_off: list[bool] = []  # once per process


def wall_clock() -> float:
    """The Unix time an entry's expiry is written in and read against (a seam for the tests)."""
    return time.time()


def new_token() -> str:
    return uuid.uuid4().hex


def fetch_through(entry: Entry, fetch: Callable[[], T]) -> T:
    """The cached value of ``entry``, computing it with ``fetch`` at most once across callers."""
    cluster.maybe_flush()
    if _bypass(entry):
        stats.incr(entry.prefix, "bypassed")
        return fetch()
    use_l1 = l1.usable()
    if use_l1 and not _refreshing.get():
        value = l1.tier.get(entry.base)
        if value is not l1._MISSING:
            stats.incr(entry.prefix, "l1_hits")
            return value  # type: ignore[no-any-return]
    generation = l1.tier.generation
    token = ""  # a lease holder's token: made when a lease is asked for (a hit asks for none)
    try:
        if _refreshing.get():
            token = new_token()
            full, _, _, _ = gate.read(entry.stamps, entry.base, "")
            if gate.try_lease(full, token):
                return _refresh(entry, full, token, fetch, generation)
            return fetch()
        # A hit is one MGET (read_hit); a miss, a write since this process last looked, or a
        # value stored by an older release (no expiry in it) takes the READ script.
        hit = gate.read_hit(entry.stamps, entry.base)
        raw: bytes | None = None
        stored = None
        if hit is not None:
            full, raw = hit
            stored = _decode(hit[1], entry.prefix)
            if stored is not None and len(stored) == 3:
                hit = None
        if hit is None:
            token = new_token()
            full, raw, pttl, leased = gate.read(entry.stamps, entry.base, token)
            stored = _decode(raw, entry.prefix) if raw is not None else None
    except RedisUnavailable:
        stats.incr(entry.prefix, "bypassed")
        return fetch()
    if hit is not None:
        # The value carries its expiry (see _refresh): no PTTL to ask Redis for.
        pttl = max(int((stored[3] - wall_clock()) * 1000), 0) if stored is not None else -2
        leased = False
    return _after_read(entry, full, raw, stored, pttl, leased, token, fetch, generation, use_l1)


def _after_read(
    entry: Entry,
    full: str,
    raw: bytes | None,
    stored: tuple[Any, ...] | None,
    pttl: int,
    leased: bool,
    token: str,
    fetch: Callable[[], T],
    generation: int,
    use_l1: bool,
) -> T:
    if stored is not None:
        return _from_stored(entry, full, stored, pttl, token, fetch, generation, use_l1)
    token = token or new_token()
    if raw is not None:  # undecodable (e.g. pickled by an older release): recompute it
        with contextlib.suppress(RedisUnavailable):
            leased = gate.try_lease(full, token)
    if leased:
        stats.incr(entry.prefix, "misses")
        return _refresh(entry, full, token, fetch, generation)
    return _wait_for_holder(entry, token, fetch, generation)


def _decode(raw: bytes, prefix: str) -> tuple[Any, ...] | None:
    try:
        stored = gate.decode(raw)
    except UnsignedValue:
        stats.incr(prefix, "rejected")
        logger.warning("a cached value of %s had no valid signature: ignored, reading the database", prefix)
        return None
    except Exception as exc:
        logger.warning("undecodable cache entry (%s); reading the database", type(exc).__name__)
        return None
    # (value, fetch seconds, grace, expiry as a Unix time); an older release stored no expiry.
    if isinstance(stored, tuple) and len(stored) in (3, 4):
        return stored
    return None


def _from_stored(
    entry: Entry,
    full: str,
    stored: tuple[Any, ...],
    pttl: int,
    token: str,
    fetch: Callable[[], T],
    generation: int,
    use_l1: bool,
) -> T:
    value, delta, grace = stored[:3]
    fresh_for = pttl / 1000 - grace if pttl >= 0 else math.inf
    if fresh_for > 0:
        beta = float(conf.SCALEOPS_CACHE_XFETCH_BETA)
        # XFetch: refresh early when delta * beta * -ln(U) reaches the time left.
        if beta > 0 and delta * beta * -math.log(1.0 - random.random()) >= fresh_for:
            token = token or new_token()
            with contextlib.suppress(RedisUnavailable):
                if gate.try_lease(full, token):
                    stats.incr(entry.prefix, "early_refreshes")
                    return _refresh(entry, full, token, fetch, generation)
        stats.incr(entry.prefix, "hits")
        if use_l1:
            l1.tier.put(
                entry.base, value, entry.stamps, generation, min(float(conf.SCALEOPS_CACHE_L1_TIMEOUT), fresh_for)
            )
        return value  # type: ignore[no-any-return]
    # Past its timeout but within the grace: one caller refreshes, the others take it as it is.
    token = token or new_token()
    with contextlib.suppress(RedisUnavailable):
        if gate.try_lease(full, token):
            stats.incr(entry.prefix, "misses")
            return _refresh(entry, full, token, fetch, generation)
    stats.incr(entry.prefix, "stale_served")
    return value  # type: ignore[no-any-return]


def _wait_for_holder(entry: Entry, token: str, fetch: Callable[[], T], generation: int) -> T:
    deadline = time.monotonic() + conf.SCALEOPS_CACHE_LEASE_WAIT_MS / 1000
    pause = 0.005
    while time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 1.5, 0.05)
        try:
            full, raw, _pttl, leased = gate.read(entry.stamps, entry.base, token)
        except RedisUnavailable:
            break
        stored = _decode(raw, entry.prefix) if raw is not None else None
        if stored is not None:
            stats.incr(entry.prefix, "stampedes_avoided")
            value: T = stored[0]
            return value
        if leased:  # the holder gave up, or a write voided its lease: our turn
            stats.incr(entry.prefix, "misses")
            return _refresh(entry, full, token, fetch, generation)
    stats.incr(entry.prefix, "lease_timeouts")
    return fetch()


def _refresh(entry: Entry, full: str, token: str, fetch: Callable[[], T], generation: int) -> T:
    started = time.perf_counter()
    try:
        value = fetch()
    except BaseException:
        with contextlib.suppress(RedisUnavailable):
            gate.release(entry.stamps, full, token)
        raise
    delta = time.perf_counter() - started
    stats.record_fetch(entry.prefix, delta)
    grace = max(int(conf.SCALEOPS_CACHE_STALE_GRACE), 0)
    lifetime = entry.timeout + grace
    # The expiry goes into the value so that a hit read by read_hit() (one MGET) needs no PTTL.
    # It is this machine's clock: skew between servers only moves XFetch's early refreshes and
    # the grace a little, never the time Redis keeps the value.
    encoded = gate.encode((value, delta, grace, wall_clock() + lifetime))
    try:
        outcome = gate.store(entry.stamps, full, token, encoded, lifetime * 1000)
    except RedisUnavailable:
        return value
    if outcome == 0:
        stats.incr(entry.prefix, "voided_sets")
    elif outcome == 1 and l1.usable():
        l1.tier.put(
            entry.base, value, entry.stamps, generation, min(float(conf.SCALEOPS_CACHE_L1_TIMEOUT), entry.timeout)
        )
    return value


def timeout_or_default(timeout: object) -> int:
    chosen = conf.SCALEOPS_CACHE_DEFAULT_TIMEOUT if timeout is None else timeout
    if isinstance(chosen, bool) or not isinstance(chosen, int) or chosen <= 0:
        raise ValueError(f"cache timeout must be a positive number of seconds, not {chosen!r}")
    return chosen
