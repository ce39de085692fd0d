"""The query monitor: an execute wrapper on every connection of every alias.

It is installed through ``connection_created``, so queries from views (sync or async), thread
pools and management commands are all seen. The hot path takes two clock readings and queues the
query; the histograms are updated from the queue in batches under a lock (and before every read).
Formatting, call-site capture and I/O happen only for slow queries (and N+1 hints), and the fleet
figures reach Redis from a background thread.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import FrameType
from typing import Any

from django.core.signals import request_finished, request_started
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from django_scaleops import wrappers
from django_scaleops.conf import conf
from django_scaleops.context import request_id_var
from django_scaleops.monitoring.fingerprint import FingerprintCache
from django_scaleops.monitoring.histogram import INV_LOG_GAMMA, MIN_INDEX, MIN_VALUE, LogHistogram
from django_scaleops.monitoring.stats import OTHER, QueryStats

slow_logger = logging.getLogger("django_scaleops.monitoring.slow")
logger = logging.getLogger("django_scaleops.monitoring")

_MUTED: dict[str, int] = {}  # sentinel scope: the monitor's own endpoints are not sampled
# Per request: how often each fingerprint ran (for the N+1 hint); None outside requests.
_request_scope: ContextVar[dict[str, int] | None] = ContextVar("scaleops_query_scope", default=None)
_request_scope_get = _request_scope.get
_DISPATCH_UID = "django_scaleops.monitoring"
# Bound once: module attribute lookups are a measurable share of a ~1 µs hot path.
_clock_ns = time.perf_counter_ns
# Frames from these modules are plumbing, not the call site a reader wants.
_PLUMBING = ("django.", "django_scaleops.", "psycopg", "asgiref.", "contextlib", "concurrent.", "threading")

# (alias, SQL string) pairs whose histograms are remembered; the ORM sends a few hundred strings.
TARGET_CACHE_SIZE = 4096
# Queries timed but not yet added to the histograms; a reader (snapshot, flush) counts them first.
PENDING_BATCH = 256

# (alias histogram, fingerprint histogram, fingerprint, statement text, alias)
Target = tuple[LogHistogram, LogHistogram, str, str, str]

Execute = Callable[[str, Any, bool, dict[str, Any]], Any]


class QueryMonitor:
    """Times every query of the connections it is attached to and keeps this process's figures."""

    def __init__(self) -> None:
        self.active = False
        self._lock = threading.Lock()
        self._fingerprints = FingerprintCache()
        self._stats = QueryStats()
        self._flushed = QueryStats()
        self._targets: dict[tuple[str, str], Target] = {}
        self._pending: deque[tuple[Target, float, int, bool]] = deque()
        self._wall_offset_ns = time.time_ns() - time.perf_counter_ns()
        self._flusher_pid: int | None = None
        self._flush_lock = threading.Lock()
        self.configure()

    def configure(self) -> None:
        """Read the settings the hot path needs once, not per query."""
        new_bound = getattr(self, "max_fingerprints", None) != conf.SCALEOPS_MONITOR_MAX_FINGERPRINTS
        if new_bound:
            self._targets = {}
        self.slow_ns = int(conf.SCALEOPS_MONITOR_SLOW_QUERY_MS * 1_000_000)
        self.max_fingerprints = conf.SCALEOPS_MONITOR_MAX_FINGERPRINTS
        self.n_plus_one = conf.SCALEOPS_MONITOR_N_PLUS_ONE
        self.window_seconds = conf.SCALEOPS_MONITOR_HEALTH_WINDOW

    def __call__(self, execute: Execute, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        scope = _request_scope_get()
        if not self.active or scope is _MUTED:
            return execute(sql, params, many, context)
        start = _clock_ns()
        try:
            return execute(sql, params, many, context)
        finally:
            end = _clock_ns()
            self.record(context["connection"].alias, sql, end - start, params, scope, many, end)

    def record(
        self,
        alias: str,
        sql: str,
        duration_ns: int,
        params: Any = None,
        scope: dict[str, int] | None = None,
        many: bool = False,
        end_ns: int | None = None,
    ) -> None:
        """Count one query of ``duration_ns`` on ``alias`` that ended at ``end_ns`` (perf_counter_ns)."""
        # The hot path touches as little memory as it can (right after a round trip to the server
        # the CPU caches are cold): the query is queued, and the histograms and window are
        # updated in batches, under the lock, by ``_count_pending``.
        target = self._targets.get((alias, sql))
        if target is None:
            target = self._target(alias, sql)
        slow = duration_ns >= self.slow_ns
        # Wall-clock second (windows of all processes must line up) without a second clock read.
        second = ((_clock_ns() if end_ns is None else end_ns) + self._wall_offset_ns) // 1_000_000_000
        pending = self._pending
        pending.append((target, duration_ns / 1000, second, slow))  # deque.append is atomic
        if len(pending) >= PENDING_BATCH:
            with self._lock:
                self._count_pending()
        if scope is not None:
            n_plus_one = self.n_plus_one
            if n_plus_one:
                fingerprint = target[2]
                seen = scope[fingerprint] = scope.get(fingerprint, 0) + 1
                if seen == n_plus_one:
                    self._n_plus_one_hint(alias, fingerprint, target[3], seen)
        if slow:
            self._slow_event(alias, target[2], target[3], duration_ns, params, many)

    def _count_pending(self) -> None:
        """Add the queued queries to the histograms and the window. Called with the lock held."""
        pending = self._pending
        popleft = pending.popleft
        stats = self._stats
        window = stats.window
        log = math.log
        ceil = math.ceil
        while pending:  # only lock holders take from the queue, so it cannot empty under us
            (hist, fp_hist, fingerprint, _, alias), micros, second, slow = popleft()
            index = ceil(log(micros) * INV_LOG_GAMMA) if micros > MIN_VALUE else MIN_INDEX
            buckets = hist.buckets
            buckets[index] = buckets.get(index, 0) + 1
            hist.count += 1
            hist.total += micros
            buckets = fp_hist.buckets
            buckets[index] = buckets.get(index, 0) + 1
            fp_hist.count += 1
            fp_hist.total += micros
            counts = window.get(second)
            if counts is None:
                counts = window[second] = [0, 0]
                self._prune_window(second)
            counts[0] += 1
            if slow:
                counts[1] += 1
                stats.alias_slow[alias] = stats.alias_slow.get(alias, 0) + 1
                stats.fingerprint_slow[fingerprint] = stats.fingerprint_slow.get(fingerprint, 0) + 1

    def _target(self, alias: str, sql: str) -> Target:
        """The histograms one (alias, SQL string) counts into, looked up once and then cached."""
        fingerprint, text = self._fingerprints.get(sql)
        with self._lock:
            stats = self._stats
            hist = stats.aliases.get(alias)
            if hist is None:
                hist = stats.aliases[alias] = LogHistogram()
            if fingerprint not in stats.fingerprints and len(stats.fingerprints) >= self.max_fingerprints:
                fingerprint = OTHER
            fp_hist = stats.fingerprints.get(fingerprint)
            if fp_hist is None:
                fp_hist = stats.fingerprints[fingerprint] = LogHistogram()
                stats.fingerprint_text.setdefault(fingerprint, text)
            target = (hist, fp_hist, fingerprint, text, alias)
            if len(self._targets) >= TARGET_CACHE_SIZE:
                self._targets = {}
            self._targets[(alias, sql)] = target
        return target

    def _prune_window(self, now: int) -> None:
        # Called under the lock when a new second starts; keeps twice the window so that a
        # flush that was late still finds the seconds it has not sent yet.
        oldest = now - 2 * max(self.window_seconds, 60)
        for second in [s for s in self._stats.window if s < oldest]:
            del self._stats.window[second]
            self._flushed.window.pop(second, None)

    def _slow_event(self, alias: str, fingerprint: str, text: str, duration_ns: int, params: Any, many: bool) -> None:
        event = {
            "event": "slow_query",
            "fingerprint": fingerprint,
            "statement": text,
            "duration_ms": round(duration_ns / 1_000_000, 3),
            "threshold_ms": conf.SCALEOPS_MONITOR_SLOW_QUERY_MS,
            "alias": alias,
            "request_id": current_request_id(),
            "call_site": call_site(),
            "params": mask_params(params, many),
        }
        slow_logger.warning(json.dumps(event, default=str), extra={"scaleops_event": event})

    def _n_plus_one_hint(self, alias: str, fingerprint: str, text: str, count: int) -> None:
        with self._lock:
            self._stats.n_plus_one += 1
        event = {
            "event": "n_plus_one",
            "fingerprint": fingerprint,
            "statement": text,
            "count": count,
            "alias": alias,
            "request_id": current_request_id(),
            "call_site": call_site(),
            "hint": "one statement repeats in this request: select_related/prefetch_related or one IN query",
        }
        slow_logger.warning(json.dumps(event, default=str), extra={"scaleops_event": event})

    def snapshot(self) -> QueryStats:
        """A copy of this process's figures since it started (or since ``reset``)."""
        with self._lock:
            self._count_pending()
            return self._stats.copy()

    def take_unflushed(self) -> tuple[QueryStats, QueryStats]:
        """``(current copy, delta since the last flush)``; pass the copy to ``mark_flushed`` on success."""
        current = self.snapshot()
        return current, current.minus(self._flushed)

    def mark_flushed(self, current: QueryStats) -> None:
        self._flushed = current

    def reset(self) -> None:
        """Forget this process's figures (the fleet's in Redis are kept)."""
        with self._lock:
            self._stats = QueryStats()
            self._flushed = QueryStats()
            self._targets = {}
            self._pending.clear()

    def flush(self) -> bool:
        """Send what this process counted since the last flush to Redis. False when it could not."""
        from django_scaleops.monitoring import aggregate

        with self._flush_lock:
            self._wall_offset_ns = time.time_ns() - time.perf_counter_ns()
            return aggregate.flush(self)

    def _flush_loop(self) -> None:
        while True:
            time.sleep(max(float(conf.SCALEOPS_MONITOR_FLUSH_INTERVAL), 0.1))
            if self.active:
                try:
                    self.flush()
                except Exception:  # the flusher must outlive any one failure
                    logger.exception("query monitor flush failed")

    def ensure_flusher(self) -> None:
        """Start this process's flusher thread once (again after a fork)."""
        pid = os.getpid()
        if self._flusher_pid == pid:
            return
        self._flusher_pid = pid
        threading.Thread(target=self._flush_loop, name="scaleops-query-flush", daemon=True).start()

    def after_fork(self) -> None:
        # The parent reports what it counted; a child starts from zero with fresh locks.
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stats = QueryStats()
        self._flushed = QueryStats()
        self._targets = {}
        self._pending = deque()
        self._flusher_pid = None


monitor = QueryMonitor()


def current_request_id() -> str | None:
    """The correlation id of the request this query runs for (None outside a request)."""
    return request_id_var.get()


def call_site() -> str | None:
    """``path:line in function`` of the first frame outside Django, psycopg and this app."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not module.startswith(_PLUMBING):
            return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back
    return None


MAX_MASKED_PARAMS = 20


def mask_params(params: Any, many: bool = False) -> Any:
    """The shape of the parameters, never their values: ``["<int>", "<str:12>"]``.

    At most ``MAX_MASKED_PARAMS`` are listed, so a 5,000-value ``IN`` list stays one short line.
    """
    if params is None:
        return None
    if isinstance(params, Iterator):
        return "<iterator>"  # executemany's generators must not be consumed here
    if many and isinstance(params, Sequence):
        return {"rows": len(params), "first": mask_params(params[0]) if params else None}
    if isinstance(params, Mapping):
        items = list(params.items())
        masked: Any = {str(key): _mask(value) for key, value in items[:MAX_MASKED_PARAMS]}
        if len(items) > MAX_MASKED_PARAMS:
            masked["..."] = f"{len(items) - MAX_MASKED_PARAMS} more"
        return masked
    if isinstance(params, Sequence) and not isinstance(params, str | bytes):
        masked = [_mask(value) for value in params[:MAX_MASKED_PARAMS]]
        if len(params) > MAX_MASKED_PARAMS:
            masked.append(f"... {len(params) - MAX_MASKED_PARAMS} more")
        return masked
    return _mask(params)


def _mask(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str | bytes | bytearray):
        return f"<{type(value).__name__}:{len(value)}>"
    if isinstance(value, list | tuple):
        return f"<{type(value).__name__}:{len(value)}>"
    return f"<{type(value).__name__}>"


def set_request_scope() -> Token[dict[str, int] | None] | None:
    """Open a fresh per-request count (unless muted); reset the returned token to close it."""
    if _request_scope.get() is _MUTED:
        return None
    return _request_scope.set({})


@contextmanager
def request_scope() -> Iterator[None]:
    """Count statements per fingerprint inside, for the N+1 hint (a request's lifetime)."""
    token = set_request_scope()
    try:
        yield
    finally:
        if token is not None:
            _request_scope.reset(token)


@contextmanager
def unmonitored() -> Iterator[None]:
    """Queries inside are not counted (the monitoring endpoints' own probes)."""
    token = _request_scope.set(_MUTED)
    try:
        yield
    finally:
        _request_scope.reset(token)


def _on_connection_created(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    # The wrapper itself is put on by django_scaleops.wrappers (outermost of the chain).
    if conf.SCALEOPS_MONITOR_CACHE_ALIAS:
        monitor.ensure_flusher()


def _open_scope(sender: Any, **kwargs: Any) -> None:
    _request_scope.set({})


def _close_scope(sender: Any, **kwargs: Any) -> None:
    _request_scope.set(None)


_registered_process_hooks = False


def install() -> None:
    """Attach the monitor to every connection opened from now on (and to this thread's open ones)."""
    global _registered_process_hooks
    monitor.configure()
    monitor.active = True
    connection_created.connect(_on_connection_created, dispatch_uid=_DISPATCH_UID)
    request_started.connect(_open_scope, dispatch_uid=_DISPATCH_UID)
    request_finished.connect(_close_scope, dispatch_uid=_DISPATCH_UID)
    wrappers.install_everywhere()
    if not _registered_process_hooks:
        _registered_process_hooks = True
        atexit.register(_flush_at_exit)
        os.register_at_fork(after_in_child=monitor.after_fork)


def uninstall() -> None:
    """Stop counting; wrappers left on other threads' connections pass queries straight through."""
    monitor.active = False
    connection_created.disconnect(dispatch_uid=_DISPATCH_UID)
    request_started.disconnect(dispatch_uid=_DISPATCH_UID)
    request_finished.disconnect(dispatch_uid=_DISPATCH_UID)
    wrappers.install_everywhere()


def _flush_at_exit() -> None:
    if monitor.active and conf.SCALEOPS_MONITOR_CACHE_ALIAS:
        try:
            monitor.flush()
        except Exception:  # never turn a clean exit into a traceback
            logger.warning("query monitor: final flush failed", exc_info=True)


def install_if_enabled() -> None:
    if conf.SCALEOPS_MONITOR_ENABLED:
        install()


def on_setting_changed(setting: str, **kwargs: Any) -> None:
    """Follow ``override_settings`` of the monitor's settings (tests turn it on this way)."""
    if not (setting.startswith("SCALEOPS_MONITOR_") or setting == "SCALEOPS_MONITOR_SLOW_QUERY_MS"):
        return
    monitor.configure()
    if setting == "SCALEOPS_MONITOR_ENABLED":
        if conf.SCALEOPS_MONITOR_ENABLED:
            install()
        else:
            uninstall()
