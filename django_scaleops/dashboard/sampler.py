"""A day of per-minute history in Redis, for the dashboard's charts: no other server to run.

Once a minute one process of the fleet (the first to ``SET <p>:lock:<minute> NX``) reads the
figures every capability already publishes, fleet-wide where they are (the query monitor's and the
cache's Redis totals, PgBouncer's console, the limiter's per-key minute counters) and appends one
point to each series. Counters become per-minute deltas of the fleet totals (the previous totals
are kept in ``<p>:last``); gauges are stored as read. Keys, under ``SCALEOPS_DASHBOARD_REDIS_PREFIX``:

- ``<p>:s:<series>`` (list of ``"<epoch minute>:<value>"``, newest first), trimmed to
  ``SCALEOPS_DASHBOARD_HISTORY_POINTS`` on every append: memory is bounded per series;
- ``<p>:series`` (sorted set: series -> epoch minute of its newest point); a series with no point
  for the whole history (a cache prefix that went away) is deleted by the next sample;
- ``<p>:last`` (hash: counter -> previous fleet total; ``_hist`` the query histogram as JSON);
- ``<p>:lock:<minute>`` (``SET NX EX 120``): one writer per minute for the whole fleet.

Series per dimension (cache prefixes, tiers) are capped at ``MAX_PER_FAMILY``, so the number of
series, and with it the memory, has a bound: see docs/dashboard.md for the figures.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import connections

from django_scaleops.conf import conf
from django_scaleops.redis_cluster.client import slot_prefix

logger = logging.getLogger("django_scaleops.dashboard")

MAX_PER_FAMILY = 20  # series per dimension (cache prefixes, tiers, replicas, pools)
LOCK_SECONDS = 120
HIST_FIELD = "_hist"
MINUTE_FIELD = "_minute"  # the epoch minute of the totals kept in <p>:last


class HistoryUnavailable(Exception):
    """The history's Redis is not configured or cannot be reached; the message says which."""


Point = tuple[int, float]  # (epoch minute, value)


def history_client() -> Any:
    """The Redis client of ``SCALEOPS_DASHBOARD_CACHE_ALIAS``; raises HistoryUnavailable when it is None."""
    alias = conf.SCALEOPS_DASHBOARD_CACHE_ALIAS
    if not alias:
        raise HistoryUnavailable("SCALEOPS_DASHBOARD_CACHE_ALIAS is None: no history is kept")
    from django_redis import get_redis_connection

    try:
        return get_redis_connection(alias)
    except Exception as exc:
        raise HistoryUnavailable(f"cache {alias!r} is not a django-redis cache ({type(exc).__name__})") from exc


class History:
    """The series of one fleet in Redis (see the module's docstring for the keys)."""

    def __init__(self, client: Any, prefix: str | None = None, points: int | None = None) -> None:
        self.client = client
        # On a Redis Cluster the prefix becomes a hash tag: every key of the history shares one
        # slot, so each pipeline below goes to one node whole instead of being split.
        self.prefix = slot_prefix(client, prefix if prefix is not None else conf.SCALEOPS_DASHBOARD_REDIS_PREFIX)
        self.points = points if points is not None else conf.SCALEOPS_DASHBOARD_HISTORY_POINTS

    @classmethod
    def default(cls) -> History:
        return cls(history_client())

    def key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def claim(self, minute: int) -> bool:
        """True for the first caller of the fleet in ``minute``, False for every other."""
        return bool(self.client.set(self.key(f"lock:{minute}"), "1", nx=True, ex=LOCK_SECONDS))

    def append(self, points: dict[str, Point]) -> None:
        """Add one point to each series, trim each to the bound, drop series idle for the whole history."""
        if not points:
            return
        pipe = self.client.pipeline(transaction=False)
        newest = max(minute for minute, _ in points.values())
        for name, (minute, value) in points.items():
            key = self.key(f"s:{name}")
            pipe.lpush(key, f"{minute}:{format_value(value)}")
            pipe.ltrim(key, 0, self.points - 1)
            pipe.zadd(self.key("series"), {name: minute})
        pipe.execute()
        idle = [
            _text(name) for name in self.client.zrangebyscore(self.key("series"), "-inf", f"({newest - self.points}")
        ]
        if idle:
            self.client.delete(*(self.key(f"s:{name}") for name in idle))
            self.client.zrem(self.key("series"), *idle)

    def series(self) -> list[str]:
        return sorted(_text(name) for name in self.client.zrange(self.key("series"), 0, -1))

    def read(self, names: Iterable[str], since: int) -> dict[str, list[Point]]:
        """The points of ``names`` from epoch minute ``since`` on, oldest first."""
        wanted = list(names)
        count = max(1, min(self.points, int(time.time() // 60) - since + 2))
        pipe = self.client.pipeline(transaction=False)
        for name in wanted:
            pipe.lrange(self.key(f"s:{name}"), 0, count - 1)
        found: dict[str, list[Point]] = {}
        for name, raw in zip(wanted, pipe.execute(), strict=True):
            points = []
            for item in reversed(raw):
                minute, _, value = _text(item).partition(":")
                if int(minute) >= since:
                    points.append((int(minute), float(value)))
            if points:
                found[name] = points
        return found

    def read_family(self, prefix: str, since: int) -> dict[str, list[Point]]:
        """Every series whose name starts with ``prefix``."""
        return self.read([name for name in self.series() if name.startswith(prefix)], since)

    def newest_minute(self) -> int | None:
        newest = self.client.zrevrange(self.key("series"), 0, 0, withscores=True)
        return int(newest[0][1]) if newest else None

    def deltas(self, totals: dict[str, float], minute: int | None = None) -> tuple[dict[str, float], int]:
        """Per-minute deltas of fleet ``totals`` since the previous sample (none the first time),
        and the minutes since that sample (1 when unknown).

        A total lower than before (Redis or the figures were reset) counts from zero. After a gap
        (no sample for some minutes: cron or every worker stopped) the change is spread over the
        minutes it took, so a chart "per minute" shows no spike for the catch-up.
        """
        if not totals:
            return {}, 1
        fields = [*totals, MINUTE_FIELD]
        *previous, previous_minute = self.client.hmget(self.key("last"), fields)
        # Totals at full precision: a fleet's running count passes 10^6 quickly.
        stored = {name: repr(float(value)) for name, value in totals.items()}
        if minute is not None:
            stored[MINUTE_FIELD] = str(minute)
        self.client.hset(self.key("last"), mapping=stored)
        gap = 1
        if minute is not None and previous_minute is not None:
            gap = max(1, minute - int(_text(previous_minute)))
        changes = {}
        for (name, total), before in zip(totals.items(), previous, strict=True):
            if before is None:
                continue
            old = float(before)
            changes[name] = (total - old if total >= old else total) / gap
        return changes, gap

    def swap_histogram(self, histogram: dict[str, Any]) -> dict[str, Any] | None:
        """Store the fleet's query histogram; return the previous one (None the first time)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(self.key("last"), HIST_FIELD)
        pipe.hset(self.key("last"), HIST_FIELD, json.dumps(histogram))
        before = pipe.execute()[0]
        return json.loads(before) if before else None

    def clear(self) -> int:
        keys = list(self.client.scan_iter(match=f"{self.prefix}:*", count=500))
        return int(self.client.delete(*keys)) if keys else 0


def format_value(value: float) -> str:
    return f"{value:.6g}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ---- what a sample reads


@dataclass
class Sample:
    """One minute's figures: ``points`` to append, ``errors`` by capability (what could not be read)."""

    minute: int
    gauges: dict[str, Point] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)  # fleet totals, turned into deltas
    histogram: dict[str, Any] | None = None
    errors: dict[str, str] = field(default_factory=dict)

    def gauge(self, name: str, value: float | None, minute: int | None = None) -> None:
        if value is not None and math.isfinite(value):
            self.gauges[name] = (self.minute if minute is None else minute, float(value))


def read_figures(now: float) -> Sample:
    """Read every capability's figures for the minute of ``now``; a capability that fails is noted."""
    sample = Sample(minute=int(now // 60))
    for name, reader in (
        ("queries", _read_queries),
        ("replicas", _read_replicas),
        ("pgbouncer", _read_pgbouncer),
        ("ratelimit", _read_ratelimit),
        ("cache", _read_cache),
    ):
        try:
            reader(sample)
        except Exception as exc:  # one capability down must not cost the others their point
            sample.errors[name] = f"{type(exc).__name__}: {exc}"[:200]
    return sample


def _read_queries(sample: Sample) -> None:
    from django_scaleops.monitoring.histogram import LogHistogram
    from django_scaleops.monitoring.report import current_stats

    stats, scope = current_stats()
    if scope != "fleet":
        raise HistoryUnavailable("the query monitor has no fleet figures (SCALEOPS_MONITOR_CACHE_ALIAS, Redis)")
    overall = LogHistogram()
    for hist in stats.aliases.values():
        overall.merge(hist)
    sample.histogram = {
        "b": {str(k): v for k, v in overall.buckets.items()},
        "sum": overall.total,
        "slow": sum(stats.alias_slow.values()),
    }
    for alias, hist in sorted(stats.aliases.items())[:MAX_PER_FAMILY]:
        sample.counters[f"q.reads.{alias}"] = hist.count
    sample.counters["q.n_plus_one"] = stats.n_plus_one


def _read_replicas(sample: Sample) -> None:
    from django_scaleops.replicas.routing import replica_status

    status = replica_status(refresh=True)
    if not status.get("configured"):
        return
    for alias, figures in sorted(status["replicas"].items())[:MAX_PER_FAMILY]:
        sample.gauge(f"r.{alias}.lag_bytes", figures.get("lag_bytes"))
        sample.gauge(f"r.{alias}.lag_seconds", figures.get("lag_seconds"))
        sample.gauge(f"r.{alias}.healthy", 1.0 if figures.get("state") == "healthy" else 0.0)


def _read_pgbouncer(sample: Sample) -> None:
    from django_scaleops.pgbouncer.aliases import pooled_aliases
    from django_scaleops.pgbouncer.metrics import get_pool_metrics

    for entry in pooled_aliases()[:MAX_PER_FAMILY]:
        metrics = get_pool_metrics(entry.alias)
        pools = metrics.pools
        name = f"pgb.{entry.alias}"
        sample.gauge(f"{name}.cl_active", sum(p.cl_active for p in pools))
        sample.gauge(f"{name}.cl_waiting", sum(p.cl_waiting for p in pools))
        sample.gauge(f"{name}.sv_active", sum(p.sv_active for p in pools))
        sample.gauge(f"{name}.sv_idle", sum(p.sv_idle for p in pools))
        sample.gauge(f"{name}.maxwait_ms", metrics.maxwait_ms)
        # SHOW STATS: total_wait_time (µs) and total_xact_count are running totals per database.
        sample.counters[f"{name}.wait_us"] = sum(s.get("total_wait_time", 0.0) for s in metrics.stats.values())
        sample.counters[f"{name}.xacts"] = sum(s.get("total_xact_count", 0.0) for s in metrics.stats.values())


def _read_ratelimit(sample: Sample) -> None:
    """Allowed and limited requests per tier in the minute before ``sample.minute`` (a completed one)."""
    counts = tier_usage(sample.minute - 1)
    for tier, (allowed, limited) in sorted(counts.items())[:MAX_PER_FAMILY]:
        sample.gauge(f"rl.{tier}.allowed", allowed, sample.minute - 1)
        sample.gauge(f"rl.{tier}.limited", limited, sample.minute - 1)


def tier_usage(minute: int) -> dict[str, tuple[int, int]]:
    """(allowed, limited) per tier in epoch ``minute``: rolled-up rows plus the counters still in Redis."""
    from django.db.models import Sum

    from django_scaleops.ratelimit.models import ApiKey, ApiKeyUsage
    from django_scaleops.ratelimit.redis_keys import key_identity, redis_connection, usage_key

    tiers = dict(ApiKey._base_manager.values_list("pk", "tier__name"))
    at = datetime.fromtimestamp(minute * 60, tz=UTC)
    counts: dict[str, list[int]] = {name: [0, 0] for name in set(tiers.values())}
    rows = (
        ApiKeyUsage.objects.filter(minute=at)
        .values_list("api_key__tier__name")
        .annotate(allowed=Sum("allowed"), limited=Sum("limited"))
    )
    for tier, allowed, limited in rows:
        slot = counts.setdefault(tier, [0, 0])
        slot[0] += allowed or 0
        slot[1] += limited or 0
    client = redis_connection()
    pipe = client.pipeline(transaction=False)
    ids = list(tiers)
    for key_id in ids:
        pipe.hmget(usage_key(key_identity(key_id)), f"{minute}:a", f"{minute}:l")
    for key_id, (allowed, limited) in zip(ids, pipe.execute(), strict=True):
        slot = counts[tiers[key_id]]
        slot[0] += int(allowed or 0)
        slot[1] += int(limited or 0)
    return {tier: (a, b) for tier, (a, b) in counts.items()}


def _read_cache(sample: Sample) -> None:
    from django_scaleops.cache import cluster

    cluster.flush()
    figures = cluster.snapshot()
    ranked = sorted(
        figures["prefixes"].items(),
        key=lambda item: -(item[1]["hits"] + item[1]["l1_hits"] + item[1]["misses"] + item[1]["stale_served"]),
    )
    for prefix, counts in ranked[:MAX_PER_FAMILY]:
        sample.counters[f"c.{prefix}.hits"] = counts["hits"] + counts["l1_hits"]
        sample.counters[f"c.{prefix}.lookups"] = (
            counts["hits"] + counts["l1_hits"] + counts["misses"] + counts["stale_served"]
        )
    sample.counters["c.stampedes_avoided"] = figures["totals"]["stampedes_avoided"]
    sample.counters["c.invalidations"] = figures["invalidations"]
    sample.gauge("c.redis_memory", redis_memory())


def redis_memory() -> float | None:
    """``used_memory`` of the cache's Redis, in bytes."""
    from django_scaleops.cache.backend import gate

    info = gate.call(lambda client: client.info("memory"))
    value = info.get("used_memory")
    return float(value) if value is not None else None


def to_points(sample: Sample, history: History, *, dry_run: bool = False) -> dict[str, Point]:
    """The points of ``sample``: gauges as read, counters and the histogram as per-minute deltas."""
    points = dict(sample.gauges)
    minute = sample.minute
    if dry_run:
        return points  # deltas need the previous totals, which a dry run must not replace
    changes, gap = history.deltas(sample.counters, minute)
    for name, change in changes.items():
        if name.startswith("q.reads.") or name == "q.n_plus_one":
            points[name] = (minute, change)
    for name, change in changes.items():
        if name.startswith("c.") and name.endswith(".lookups") and change > 0:
            prefix = name[: -len(".lookups")]
            points[f"{prefix}.hit_rate"] = (minute, changes.get(f"{prefix}.hits", 0.0) / change)
    for name in ("c.stampedes_avoided", "c.invalidations"):
        if name in changes:
            points[name] = (minute, changes[name])
    for name, xacts in changes.items():
        if name.startswith("pgb.") and name.endswith(".xacts"):
            alias = name[: -len(".xacts")]
            waited = changes.get(f"{alias}.wait_us", 0.0)
            points[f"{alias}.avg_wait_ms"] = (minute, waited / xacts / 1000 if xacts else 0.0)
    if sample.histogram is not None:
        previous = history.swap_histogram(sample.histogram)
        if previous is not None:
            points.update(_histogram_points(sample.histogram, previous, minute, gap))
    return points


def _histogram_points(current: dict[str, Any], previous: dict[str, Any], minute: int, gap: int = 1) -> dict[str, Point]:
    """Counts per minute (spread over ``gap`` minutes since the previous sample), share and percentiles."""
    from django_scaleops.monitoring.histogram import LogHistogram

    now = LogHistogram.from_buckets({int(k): int(v) for k, v in current["b"].items()}, float(current["sum"]))
    before = LogHistogram.from_buckets({int(k): int(v) for k, v in previous["b"].items()}, float(previous["sum"]))
    if now.count < before.count:  # the fleet's figures were reset: count from zero
        before = LogHistogram()
        previous = {"slow": 0}
    delta = now.minus(before)
    slow = max(int(current["slow"]) - int(previous["slow"]), 0)
    points: dict[str, Point] = {"q.count": (minute, delta.count / gap), "q.slow": (minute, slow / gap)}
    if delta.count:
        points["q.slow_share"] = (minute, slow / delta.count)
        for name, micros in delta.quantiles((0.5, 0.95, 0.99)).items():
            if micros is not None:
                points[f"q.{name}"] = (minute, micros / 1000)
    return points


@dataclass(frozen=True)
class SampleResult:
    minute: int
    written: bool
    points: dict[str, Point]
    errors: dict[str, str]
    reason: str = ""


def sample(*, now: float | None = None, dry_run: bool = False, history: History | None = None) -> SampleResult:
    """Take this minute's point for the fleet, unless another process already did.

    Raises HistoryUnavailable when the history's Redis cannot be used.
    """
    now = time.time() if now is None else now
    minute = int(now // 60)
    try:
        history = history or History.default()
        if not dry_run and not history.claim(minute):
            return SampleResult(minute, False, {}, {}, "another process already sampled this minute")
    except HistoryUnavailable:
        raise
    except Exception as exc:
        raise HistoryUnavailable(f"Redis of the history unreachable ({type(exc).__name__})") from exc
    figures = read_figures(now)
    try:
        points = to_points(figures, history, dry_run=dry_run)
        if not dry_run:
            history.append(points)
    except Exception as exc:
        raise HistoryUnavailable(f"Redis of the history unreachable ({type(exc).__name__})") from exc
    return SampleResult(minute, not dry_run, points, figures.errors)


# ---- sampling from the processes themselves (SCALEOPS_DASHBOARD_SAMPLE)

_due_lock = threading.Lock()
_next_due = 0.0


def sample_after_request(**kwargs: Any) -> None:
    """``request_finished`` receiver: at most once a minute per process, sample in a thread.

    The thread tries the fleet's lock for the minute: of N processes one reads and writes.
    """
    global _next_due
    if not conf.SCALEOPS_DASHBOARD_SAMPLE:
        return
    now = time.time()
    if now < _next_due:
        return
    with _due_lock:
        if now < _next_due:
            return
        _next_due = (now // 60 + 1) * 60
    threading.Thread(target=_sample_in_thread, name="scaleops-dashboard-sample", daemon=True).start()


def _sample_in_thread() -> None:
    try:
        sample()
    except Exception as exc:  # a sample is worth a log line, never a crash
        logger.warning("dashboard sample skipped: %s", exc)
    finally:
        connections.close_all()  # this thread's own connections


def reset_schedule() -> None:
    global _next_due
    _next_due = 0.0
