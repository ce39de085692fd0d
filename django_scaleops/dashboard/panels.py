"""What each panel of the dashboard shows, built from the figures each capability already keeps.

Every panel is built on its own: a service that is down makes its panel (or its chart) say
``unavailable: <reason>``, and the other panels still render.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.urls import NoReverseMatch, reverse
from django.utils.safestring import SafeString

from django_scaleops.conf import conf
from django_scaleops.dashboard import charts, sampler, sites
from django_scaleops.dashboard.charts import Series

HEALTHY, DEGRADED, UNHEALTHY, UNKNOWN, OFF = "healthy", "degraded", "unhealthy", "unknown", "off"
RANGES = {"1h": 60, "6h": 360, "24h": 1440}


@dataclass
class Chart:
    title: str
    svg: SafeString | None = None
    unavailable: str | None = None


@dataclass
class Panel:
    id: str
    title: str
    unavailable: str | None = None
    status: str = UNKNOWN
    why: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    charts: list[Chart] = field(default_factory=list)

    @property
    def template(self) -> str:
        return f"scaleops/dashboard/panels/{self.id}.html"


@dataclass
class Context:
    """What the panels share: the time range and the history read once for all of them."""

    now: float
    minutes: int
    points: dict[str, list[tuple[int, float]]]
    history_error: str | None
    newest_sample: int | None

    @property
    def end(self) -> int:
        return int(self.now // 60)

    @property
    def start(self) -> int:
        return self.end - self.minutes

    def chart(self, title: str, names: dict[str, str], unit: str, *, y_max: float | None = None) -> Chart:
        """A line chart of the series ``names`` (series -> legend) over the range."""
        if self.history_error:
            return Chart(title, unavailable=f"history unavailable: {self.history_error}")
        series = [Series(legend, self.points[name]) for name, legend in names.items() if name in self.points]
        if not series:
            return Chart(title, unavailable="no history yet: sampling is off or has not run in this range")
        return Chart(title, charts.line_chart(title, series, start=self.start, end=self.end, unit=unit, y_max=y_max))


def build_context(now: float, range_name: str) -> Context:
    minutes = RANGES.get(range_name, RANGES["1h"])
    try:
        history = sampler.History.default()
        names = history.series()
        points = history.read(names, int(now // 60) - minutes)
        newest = history.newest_minute()
        error = None
    except Exception as exc:
        points, newest, error = {}, None, _reason(exc)
    return Context(now, minutes, points, error, newest)


def _reason(exc: BaseException) -> str:
    from django_scaleops.logging.masking import get_masker

    if isinstance(exc, sampler.HistoryUnavailable):
        return str(exc)
    # Masked as the logs are: a driver's message may quote a URL with its password.
    text = get_masker().mask_text(str(exc).splitlines()[0][:160]) if str(exc) else ""
    return f"{type(exc).__name__}{': ' + text if text else ''}"


def guarded(build: Callable[[Context], Panel], panel_id: str, title: str) -> Callable[[Context], Panel]:
    def run(context: Context) -> Panel:
        try:
            return build(context)
        except Exception as exc:  # one broken panel must not take the page down
            return Panel(panel_id, title, unavailable=_reason(exc), status=UNHEALTHY, why=_reason(exc))

    return run


# ---- queries


def short_call_site(site: str) -> str:
    """``site`` relative to the import root it is under (``app/views.py:12 in f``), as a reader
    of the project knows it; the server's own folders say nothing to them."""
    for root in sorted((p for p in sys.path if p), key=len, reverse=True):
        prefix = os.path.join(os.path.abspath(root), "")
        if site.startswith(prefix):
            return site[len(prefix) :]
    return site


def queries_panel(context: Context) -> Panel:
    from django_scaleops.monitoring.report import current_stats

    stats, scope = current_stats()
    report = stats.to_report(
        now=context.now,
        window=conf.SCALEOPS_MONITOR_HEALTH_WINDOW,
        min_sample=conf.SCALEOPS_MONITOR_HEALTH_MIN_SAMPLE,
        degraded=conf.SCALEOPS_MONITOR_DEGRADED_SHARE,
        unhealthy=conf.SCALEOPS_MONITOR_UNHEALTHY_SHARE,
    )
    health = report["health"]
    share = health["slow_share"]
    why = (
        f"{health['slow']} slow of {health['queries']} queries in the last {health['window_seconds']} s"
        + (f" ({share:.1%})" if share is not None else "")
        + f"; figures of the {scope}"
    )
    call_sites: dict[str, str] = {}
    hints: list[dict[str, Any]] = []
    with contextlib.suppress(Exception):  # Redis down: the table goes without call sites
        call_sites, hints = sites.read(sampler.history_client(), conf.SCALEOPS_DASHBOARD_REDIS_PREFIX)
    top = [
        {**row, "call_site": short_call_site(call_sites.get(row["fingerprint"], ""))}
        for row in report["top_slow_fingerprints"]
        if row["queries"]
    ]
    hints = [{**hint, "call_site": short_call_site(str(hint.get("call_site") or ""))} for hint in hints]
    panel = Panel("queries", "Queries", status=health["status"], why=why)
    panel.data = {
        "scope": scope,
        "queries": report["queries"],
        "slow": report["slow"],
        "duration": report["duration_ms"],
        "slow_ms": conf.SCALEOPS_MONITOR_SLOW_QUERY_MS,
        "health": health,
        "top": top,
        "n_plus_one": report["n_plus_one_hints"],
        "hints": hints,
        "aliases": report["aliases"],
    }
    panel.charts = [
        context.chart("Query duration percentiles", {"q.p50": "p50", "q.p95": "p95", "q.p99": "p99"}, "ms"),
        context.chart("Slow share", {"q.slow_share": "slow share"}, "%", y_max=1.0),
        context.chart("Queries per minute", {"q.count": "queries", "q.slow": "slow"}, "per minute"),
    ]
    return panel


# ---- replicas


def replicas_panel(context: Context) -> Panel:
    from django_scaleops.monitoring.report import current_stats
    from django_scaleops.replicas.routing import replica_status

    status = replica_status()
    if not status.get("configured"):
        return Panel(
            "replicas",
            "Read replicas",
            unavailable="not configured: PrimaryReplicaRouter is not in DATABASE_ROUTERS",
            status=OFF,
            why="router not installed",
        )
    if any(r["last_check"] is None for r in status["replicas"].values()):
        status = replica_status(refresh=True)
    stats, scope = current_stats()
    reads = {alias: hist.count for alias, hist in stats.aliases.items()}
    replicas = status["replicas"]
    down = [alias for alias, r in replicas.items() if r["state"] != "healthy"]
    if status["all_replicas_down"]:
        state, why = UNHEALTHY, f"every replica is down or behind ({', '.join(down)}): reads go to the primary"
    elif down:
        state, why = DEGRADED, ", ".join(f"{a} is {replicas[a]['state']}" for a in down)
    else:
        lags = [r["lag_seconds"] for r in replicas.values() if r["lag_seconds"] is not None]
        state, why = HEALTHY, f"{len(replicas)} replica(s) healthy" + (f", lag ≤ {max(lags):.1f} s" if lags else "")
    panel = Panel("replicas", "Read replicas", status=state, why=why)
    panel.data = {
        "primary": status["primary"],
        "replicas": [{"alias": alias, **figures, "served": reads.get(alias, 0)} for alias, figures in replicas.items()],
        "primary_served": reads.get(status["primary"], 0),
        "scope": scope,
        "primary_reads": status["primary_reads"],
        "failover_reads": status["failover_reads"],
    }
    aliases = sorted(replicas)
    panel.charts = [
        context.chart("Replication lag (bytes)", {f"r.{a}.lag_bytes": a for a in aliases}, "bytes"),
        context.chart("Replication lag (seconds)", {f"r.{a}.lag_seconds": a for a in aliases}, "s"),
        context.chart(
            "Queries served per alias",
            {f"q.reads.{a}": a for a in [status["primary"], *aliases]},
            "per minute",
        ),
    ]
    return panel


# ---- PgBouncer


def pgbouncer_panel(context: Context) -> Panel:
    from django_scaleops.pgbouncer.aliases import pooled_aliases
    from django_scaleops.pgbouncer.metrics import metrics_source

    if not pooled_aliases():
        return Panel(
            "pgbouncer",
            "PgBouncer",
            unavailable="not configured: SCALEOPS_PGBOUNCER_ALIASES is empty",
            status=OFF,
            why="no alias declared",
        )
    figures = metrics_source()
    unreachable = [alias for alias, value in figures.items() if not value.get("reachable")]
    if unreachable:
        reason = f"cannot reach the admin console of {', '.join(unreachable)}"
        return Panel("pgbouncer", "PgBouncer", unavailable=reason, status=UNHEALTHY, why=reason)
    waiting = sum(v["cl_waiting"] for v in figures.values())
    maxwait = max(v["maxwait_ms"] for v in figures.values())
    if maxwait >= conf.SCALEOPS_PGBOUNCER_MAX_WAIT_CRITICAL_MS:
        state = UNHEALTHY
    elif waiting or maxwait >= conf.SCALEOPS_PGBOUNCER_MAX_WAIT_MS:
        state = DEGRADED
    else:
        state = HEALTHY
    panel = Panel(
        "pgbouncer", "PgBouncer", status=state, why=f"{waiting} client(s) waiting, longest wait {maxwait:.0f} ms"
    )
    panel.data = {"aliases": figures}
    names = sorted(figures)
    panel.charts = [
        context.chart("Average wait for a server connection", {f"pgb.{a}.avg_wait_ms": a for a in names}, "ms"),
        context.chart(
            "Clients",
            {
                **{f"pgb.{a}.cl_active": f"{a} active" for a in names},
                **{f"pgb.{a}.cl_waiting": f"{a} waiting" for a in names},
            },
            "clients",
        ),
    ]
    return panel


# ---- rate limiting


def ratelimit_panel(context: Context) -> Panel:
    from django.db.models import Sum

    from django_scaleops.ratelimit.analytics import _parse
    from django_scaleops.ratelimit.models import ApiKey, ApiKeyUsage
    from django_scaleops.ratelimit.redis_keys import key_identity, redis_connection, usage_key
    from django_scaleops.ratelimit.stats import stats

    client = redis_connection()
    try:
        client.ping()
    except Exception as exc:
        reason = f"Redis of the limiter ({conf.SCALEOPS_THROTTLE_CACHE_ALIAS!r}) unreachable: {_reason(exc)}"
        return Panel(
            "ratelimit",
            "Rate limiting",
            unavailable=reason,
            status=DEGRADED,
            why="the limiter runs in each tier's failure mode",
        )
    since = datetime.fromtimestamp(context.start * 60, tz=UTC)
    usage: dict[int, list[int]] = {}
    rows = (
        ApiKeyUsage.objects.filter(minute__gte=since)
        .values_list("api_key_id")
        .annotate(allowed=Sum("allowed"), limited=Sum("limited"))
    )
    for key_id, allowed, limited in rows:
        usage[key_id] = [allowed or 0, limited or 0]
    key_ids = list(ApiKey._base_manager.values_list("pk", flat=True))
    pipe = client.pipeline(transaction=False)
    for key_id in key_ids:
        pipe.hgetall(usage_key(key_identity(key_id)))
    for key_id, raw in zip(key_ids, pipe.execute(), strict=True):
        for minute, (allowed, limited) in _parse(raw).items():
            if minute >= context.start:
                slot = usage.setdefault(key_id, [0, 0])
                slot[0] += allowed
                slot[1] += limited
    keys = ApiKey._base_manager.select_related("tier").in_bulk(
        [k for k, _ in sorted(usage.items(), key=lambda i: -i[1][0])[:10]]
        + [k for k, _ in sorted(usage.items(), key=lambda i: -i[1][1])[:10] if usage[k][1]]
    )

    def row(key_id: int) -> dict[str, Any]:
        key = keys[key_id]
        return {
            "name": key.name,
            "masked": key.masked,
            "tier": key.tier.name,
            "allowed": usage[key_id][0],
            "limited": usage[key_id][1],
            "url": _admin_url(key),
            "revoked": key.is_revoked,
        }

    by_use = [row(k) for k in sorted(usage, key=lambda k: -usage[k][0])[:10] if k in keys]
    by_refusals = [row(k) for k in sorted(usage, key=lambda k: -usage[k][1])[:10] if k in keys and usage[k][1]]
    counts = stats.snapshot()
    degraded = {name: count for name, count in sorted(counts.items()) if name.startswith("degraded_")}
    limited = sum(v[1] for v in usage.values())
    total = sum(v[0] + v[1] for v in usage.values())
    state = DEGRADED if degraded else HEALTHY
    why = f"{limited} of {total} keyed requests limited in the range"
    if degraded:
        why += f"; {sum(degraded.values())} degraded-mode decisions in this process"
    panel = Panel("ratelimit", "Rate limiting", status=state, why=why)
    panel.data = {
        "by_use": by_use,
        "by_refusals": by_refusals,
        "degraded": degraded,
        "process_counts": counts,
        "total": total,
        "limited": limited,
    }
    tiers = sorted({n.split(".")[1] for n in context.points if n.startswith("rl.")})
    panel.charts = [
        context.chart(
            "Requests per minute by tier",
            {
                **{f"rl.{t}.allowed": f"{t} allowed" for t in tiers},
                **{f"rl.{t}.limited": f"{t} limited" for t in tiers},
            },
            "requests",
        )
    ]
    return panel


def _admin_url(key: Any) -> str:
    try:
        return reverse("admin:scaleops_apikey_change", args=[key.pk])
    except NoReverseMatch:
        return ""


# ---- cache


def cache_panel(context: Context) -> Panel:
    from django_scaleops.cache import cluster

    cluster.flush()
    figures = cluster.snapshot()  # raises RedisUnavailable while Redis is down
    memory = sampler.redis_memory()
    totals = figures["totals"]
    lookups = totals["hits"] + totals["l1_hits"] + totals["misses"] + totals["stale_served"]
    panel = Panel(
        "cache",
        "Cache",
        status=HEALTHY,
        why=f"hit ratio {totals['hit_ratio']:.1%} over {lookups} lookups" if lookups else "no lookups yet",
    )
    panel.data = {
        "totals": totals,
        "prefixes": figures["prefixes"],
        "invalidations": figures["invalidations"],
        "memory": memory,
        "enabled": conf.SCALEOPS_CACHE_ENABLED,
    }
    prefixes = sorted(
        {n[2 : -len(".hit_rate")] for n in context.points if n.startswith("c.") and n.endswith(".hit_rate")}
    )
    panel.charts = [
        context.chart("Hit rate per prefix", {f"c.{p}.hit_rate": p for p in prefixes}, "%", y_max=1.0),
        context.chart(
            "Stampedes avoided and invalidations",
            {"c.stampedes_avoided": "stampedes avoided", "c.invalidations": "table stamps bumped"},
            "per minute",
        ),
        context.chart("Redis memory", {"c.redis_memory": "used_memory"}, "bytes"),
    ]
    return panel


# ---- partitions


def partitions_panel(context: Context) -> Panel:
    from django_scaleops.partitioning import intervals
    from django_scaleops.partitioning.archive import plan_archive
    from django_scaleops.partitioning.config import partitioned_models
    from django_scaleops.partitioning.health import find_problems, partition_details

    now = datetime.fromtimestamp(context.now, tz=UTC)
    tables = []
    worst = HEALTHY
    reasons = []
    for config in partitioned_models():
        details = partition_details(config, using="default")
        problems = find_problems(config, using="default", now=now)
        ranged = [d for d in details if not d["default"]]
        default = next((d for d in details if d["default"]), None)
        waiting = next((int(p.message.split()[0]) for p in problems if p.kind == "rows_in_default"), 0)
        # The first period from the current one on without a partition.
        start = intervals.floor(now, config.interval)
        covered = [
            (datetime.fromisoformat(d["from"]), datetime.fromisoformat(d["to"]))
            for d in ranged
            if d["from"] and d["to"]
        ]
        missing = None
        for _ in range(config.premake + 1 + 120):
            end = intervals.add(start, config.interval)
            if not any(a < end and start < b for a, b in covered):
                missing = (start, end)
                break
            start = end
        current_covered = missing is None or missing[0] > intervals.floor(now, config.interval)
        archive = plan_archive(config, using="default", now=now)
        command = f"python manage.py ensure_partitions --model {config.label}"
        if waiting:
            command += " --rescue-default"
        serious = [
            p for p in problems if p.kind in ("gap", "overlap") or (p.kind == "missing_future" and not current_covered)
        ]
        if serious:
            state = UNHEALTHY
        elif problems:
            state = DEGRADED
        else:
            state = HEALTHY
        if state != HEALTHY:
            reasons.append(f"{config.label}: {problems[0].message}")
        worst = max(worst, state, key=[HEALTHY, DEGRADED, UNHEALTHY].index)
        tables.append(
            {
                "label": config.label,
                "table": config.table,
                "interval": config.interval,
                "status": state,
                "partitions": ranged,
                "default": default,
                "waiting": waiting,
                "missing": missing,
                "problems": [p.as_dict() for p in problems],
                "archive_due": [s.partition for s in archive if s.state == "attached"],
                "archive_pending": [s.partition for s in archive if s.state != "attached"],
                "retention": config.retention,
                "command": command if problems else "",
                "archive_command": f"python manage.py archive_partitions --model {config.label}" if archive else "",
                "chart": Chart(
                    f"{config.label} partition sizes",
                    charts.bar_chart(
                        f"{config.label} partition sizes",
                        [
                            d["partition"]
                            + (f" (~{d['estimated_rows']:,} rows)" if d["estimated_rows"] is not None else "")
                            for d in details
                        ],
                        [float(d["bytes"]) for d in details],
                        unit="bytes",
                    ),
                )
                if details
                else Chart(f"{config.label} partition sizes", unavailable="no partitions"),
            }
        )
    if not tables:
        return Panel(
            "partitions",
            "Partitions",
            status=OFF,
            why="no partitioned model installed",
            unavailable="no partitioned model installed",
        )
    why = "; ".join(reasons) if reasons else f"{len(tables)} table(s): every period covered"
    panel = Panel("partitions", "Partitions", status=worst, why=why)
    panel.data = {"tables": tables}
    return panel


PANELS: list[tuple[str, str, Callable[[Context], Panel]]] = [
    ("queries", "Queries", queries_panel),
    ("replicas", "Read replicas", replicas_panel),
    ("pgbouncer", "PgBouncer", pgbouncer_panel),
    ("ratelimit", "Rate limiting", ratelimit_panel),
    ("cache", "Cache", cache_panel),
    ("partitions", "Partitions", partitions_panel),
]


def build(range_name: str = "1h", now: float | None = None) -> dict[str, Any]:
    """Every panel and the health summary above them."""
    from django_scaleops.monitoring.monitor import unmonitored

    now = time.time() if now is None else now
    with unmonitored():  # the dashboard's own queries are not the application's load
        context = build_context(now, range_name)
        panels = [guarded(build_panel, panel_id, title)(context) for panel_id, title, build_panel in PANELS]
    history = history_health(context)
    return {
        "panels": panels,
        "health": [*((p.title, p.status, p.why) for p in panels), history],
        "range": range_name if range_name in RANGES else "1h",
        "ranges": list(RANGES),
        "generated_at": datetime.fromtimestamp(now, tz=UTC),
        "history_error": context.history_error,
        "refresh": conf.SCALEOPS_DASHBOARD_REFRESH_SECONDS,
    }


def history_health(context: Context) -> tuple[str, str, str]:
    if context.history_error:
        return "History", UNHEALTHY, context.history_error
    if context.newest_sample is None:
        return (
            "History",
            UNKNOWN,
            "no sample yet: set SCALEOPS_DASHBOARD_SAMPLE = True or run scaleops_sample from cron",
        )
    age = context.end - context.newest_sample
    if age > 3:
        return "History", DEGRADED, f"newest sample {age} minutes old: is sampling still on?"
    return "History", HEALTHY, f"sampled {age} minute(s) ago"
