"""Server-side render time of the operations dashboard with a day of history, vs the raw JSON
endpoint ``/metrics/queries``.

A day of per-minute points (1440 per series) is written for a realistic set of series (queries,
two replicas' lag, PgBouncer, three tiers, five cache prefixes), then the page is rendered through
Django's test client as a superuser: the default 1 h range and the 24 h range (every point of the
day drawn). The peer is the cheapest page a user could open instead: ``/metrics/queries``, the
query report as JSON with every capability's metrics source, which the dashboard must do more
than (panels, the history, charts, the template). Target: the dashboard under 300 ms.

Run with ``make bench`` (or under ``python -m django_scaleops.testing.services run --``).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
os.environ["EXAMPLE_SCALEOPS"] = "1"

from benchmarks.harness import own_database

own_database("dashboard")

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from benchmarks.harness import compare, rounds_for, sized  # noqa: E402
from django_scaleops.dashboard.sampler import History  # noqa: E402

PREFIX = "bench-dash"
DAY = 1440
REQUESTS_PER_ROUND = sized(5, 1)
TARGET_MS = 300.0

SERIES = [
    *("q.p50", "q.p95", "q.p99", "q.slow_share", "q.count", "q.slow"),
    *(f"q.reads.{alias}" for alias in ("default", "replica")),
    *(f"r.replica.{name}" for name in ("lag_bytes", "lag_seconds")),
    *(f"pgb.pgbouncer.{name}" for name in ("cl_active", "cl_waiting", "sv_active", "sv_idle", "avg_wait_ms")),
    *(f"rl.{tier}.{kind}" for tier in ("free", "pro", "enterprise") for kind in ("allowed", "limited")),
    *(f"c.p{index}.hit_rate" for index in range(5)),
    *("c.stampedes_avoided", "c.redis_memory"),
]


def fill_day(history: History) -> None:
    history.clear()
    end = int(time.time() // 60)
    for offset in range(DAY):
        minute = end - DAY + 1 + offset
        history.append({name: (minute, float((offset * 7 + index) % 100)) for index, name in enumerate(SERIES)})
    lengths = {history.client.llen(history.key(f"s:{name}")) for name in SERIES}
    assert lengths == {DAY}, lengths
    used = sum(history.client.memory_usage(history.key(f"s:{name}")) or 0 for name in SERIES)
    per_series = used / len(SERIES)
    print(f"History: {len(SERIES)} series x {DAY} points, {used / 1024:,.0f} KiB ({per_series:,.0f} B each)")


def timed(client: Client, url: str) -> float:
    """Mean server-side time of one request, in ms, over a round."""
    started = time.perf_counter()
    for _ in range(REQUESTS_PER_ROUND):
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
    return (time.perf_counter() - started) * 1000 / REQUESTS_PER_ROUND


def main() -> None:
    call_command("migrate", interactive=False, verbosity=0)
    user = User.objects.filter(username="bench-dashboard").first() or User.objects.create_superuser(
        "bench-dashboard", password=None
    )
    client = Client()
    client.force_login(user)
    with override_settings(SCALEOPS_DASHBOARD_REDIS_PREFIX=PREFIX):
        history = History.default()
        fill_day(history)
        try:
            for url in ("/admin/scaleops/dashboard/", "/admin/scaleops/dashboard/?range=24h", "/metrics/queries"):
                timed(client, url)  # warm-up: templates, connections, URL resolver
            results = {}
            for label, url in (("1 h range", "/admin/scaleops/dashboard/"), ("24 h range", "?range=24h")):
                page_url = url if url.startswith("/") else f"/admin/scaleops/dashboard/{url}"
                results[label] = compare(
                    f"Dashboard page, {label}, a day of history ({REQUESTS_PER_ROUND} requests a round, test client)",
                    lambda page_url=page_url: timed(client, page_url),  # type: ignore[misc]
                    lambda: timed(client, "/metrics/queries"),
                    unit="ms",
                    higher_is_better=False,
                    ours_name="dashboard",
                    peer_name="/metrics/queries (JSON)",
                )
            for label in results:
                page_url = "/admin/scaleops/dashboard/" + ("?range=24h" if label.startswith("24") else "")
                rounds = [timed(client, page_url) for _ in range(rounds_for(11))]
                median = statistics.median(rounds)
                verdict = "under" if median < TARGET_MS else "OVER"
                print(f"  dashboard {label}: median {median:.1f} ms ({verdict} the {TARGET_MS:.0f} ms target)")
        finally:
            history.clear()


if __name__ == "__main__":
    main()
