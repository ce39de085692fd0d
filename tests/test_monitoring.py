"""The query monitor against the real primary: counts, percentiles, slow queries, N+1, health."""

from __future__ import annotations

import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from django_scaleops.monitoring import aggregate
from django_scaleops.monitoring.fingerprint import normalize
from django_scaleops.monitoring.health import classify
from django_scaleops.monitoring.histogram import LogHistogram
from django_scaleops.monitoring.monitor import mask_params, monitor
from django_scaleops.monitoring.report import query_report
from tests.monitoringapp.styles import run_query_styles, statement_count

SLOW_LOGGER = "django_scaleops.monitoring.slow"


@pytest.fixture
def monitoring():
    """The monitor switched on, with empty figures and a Redis prefix of this test's own."""
    prefix = f"test-qm-{uuid.uuid4().hex[:8]}"
    with override_settings(SCALEOPS_MONITOR_ENABLED=True, SCALEOPS_MONITOR_REDIS_PREFIX=prefix):
        monitor.reset()
        yield monitor
        aggregate.clear(aggregate.redis_client(), prefix)
    assert monitor not in connection.execute_wrappers
    monitor.reset()


def queries_seen(alias: str = "default") -> int:
    hist = monitor.snapshot().aliases.get(alias)
    return int(hist.count) if hist else 0


def captured_styles() -> int:
    """Run the five styles on this thread; how many statements Django's capture saw."""
    with CaptureQueriesContext(connection) as captured:
        run_query_styles()
    return statement_count(captured)


# ---- counts in every execution context


@pytest.mark.django_db(transaction=True)
def test_sync_view_counts_equal_django_capture(monitoring, client, settings):
    settings.ROOT_URLCONF = "tests.monitoringapp.urls"
    before = queries_seen()
    captured = client.get("/styles/sync").json()["captured"]
    assert captured >= 9
    assert queries_seen() - before == captured


@pytest.mark.django_db(transaction=True)
def test_async_view_counts_equal_django_capture(monitoring, async_client, settings):
    from asgiref.sync import async_to_sync

    settings.ROOT_URLCONF = "tests.monitoringapp.urls"
    before = queries_seen()
    styles_count = captured_styles()
    assert queries_seen() - before == styles_count

    async def request():
        response = await async_client.get("/styles/async")
        return response.status_code

    before = queries_seen()
    assert async_to_sync(request)() == 200
    assert queries_seen() - before == styles_count


@pytest.mark.django_db(transaction=True)
def test_thread_pool_counts_equal_django_capture(monitoring):
    def work(_: int) -> int:
        try:
            with CaptureQueriesContext(connections["default"]) as captured:
                run_query_styles()
            return statement_count(captured)
        finally:
            connections.close_all()

    before = queries_seen()
    with ThreadPoolExecutor(max_workers=4) as pool:
        captured = sum(pool.map(work, range(8)))
    assert captured >= 72
    assert queries_seen() - before == captured


@pytest.mark.django_db(transaction=True)
def test_management_command_counts_equal_django_capture(monitoring):
    before = queries_seen()
    out = StringIO()
    call_command("monitoring_styles", stdout=out)
    captured = int(out.getvalue())
    assert captured >= 9
    assert queries_seen() - before == captured


@pytest.mark.django_db(databases=["default", "replica", "pgbouncer"])
def test_every_alias_is_monitored(monitoring):
    for alias in ("default", "replica", "pgbouncer"):
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
    stats = monitor.snapshot()
    assert {alias: stats.aliases[alias].count for alias in ("default", "replica", "pgbouncer")} == {
        "default": 1,
        "replica": 1,
        "pgbouncer": 1,
    }


@pytest.mark.django_db
def test_switching_off_stops_counting_and_django_wrappers_keep_working(monitoring):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    # Django's own execute_wrapper() pops the last wrapper: the monitor (first) must survive it.
    with connection.execute_wrapper(lambda execute, *args: execute(*args)), connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert monitor in connection.execute_wrappers
    assert queries_seen() == 2
    with override_settings(SCALEOPS_MONITOR_ENABLED=False):
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert monitor not in connection.execute_wrappers
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert queries_seen() == 3


# ---- percentiles


@pytest.mark.parametrize("shape", ["lognormal", "bimodal"])
def test_percentiles_within_two_percent_of_numpy(shape):
    rng = np.random.default_rng(20261126)
    if shape == "lognormal":
        samples = rng.lognormal(mean=np.log(2000), sigma=1.0, size=100_000)  # microseconds, median 2 ms
    else:
        fast = rng.normal(800, 80, size=70_000)
        slow = rng.normal(120_000, 15_000, size=30_000)
        samples = np.clip(np.concatenate([fast, slow]), 1, None)
        rng.shuffle(samples)
    # Four "workers" each fill a histogram; the merged one must match the whole sample.
    merged = LogHistogram()
    for part in np.array_split(samples, 4):
        hist = LogHistogram()
        hist.extend(part.tolist())
        merged.merge(hist)
    assert merged.count == 100_000
    for q in (50, 90, 95, 99):
        exact = float(np.percentile(samples, q))
        estimate = merged.quantile(q / 100)
        assert estimate is not None
        assert abs(estimate - exact) / exact < 0.02, (shape, q, estimate, exact)


def test_empty_histogram_and_bad_quantile():
    hist = LogHistogram()
    assert hist.quantile(0.5) is None
    with pytest.raises(ValueError, match="between 0 and 1"):
        hist.quantile(1.5)


# ---- slow queries


@pytest.mark.django_db
def test_one_slow_query_one_event_and_fast_ones_none(monitoring, caplog):
    caplog.set_level(logging.WARNING, logger=SLOW_LOGGER)
    with connection.cursor() as cursor:
        for _ in range(1000):
            cursor.execute("SELECT %s", [1])
        assert not [r for r in caplog.records if r.name == SLOW_LOGGER]
        cursor.execute("SELECT pg_sleep(0.15), %s", ["s3cret-token"])
    events = [r for r in caplog.records if r.name == SLOW_LOGGER]
    assert len(events) == 1
    line = events[0].getMessage()
    event = json.loads(line)
    assert event["event"] == "slow_query"
    assert event["alias"] == "default"
    assert event["duration_ms"] >= 150
    assert event["statement"] == "SELECT pg_sleep(?), ?"
    assert event["fingerprint"]
    assert event["params"] == ["<str:12>"]
    assert "s3cret" not in line
    assert event["call_site"].startswith(__file__)
    assert "request_id" in event
    stats = monitor.snapshot()
    assert stats.aliases["default"].count == 1001
    assert stats.alias_slow["default"] == 1


@override_settings(SCALEOPS_MONITOR_SLOW_QUERY_MS=5)
@pytest.mark.django_db
def test_threshold_setting_is_honoured(monitoring, caplog):
    caplog.set_level(logging.WARNING, logger=SLOW_LOGGER)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.01)")
    assert len([r for r in caplog.records if r.name == SLOW_LOGGER]) == 1


def test_fingerprints_fold_literals_and_lists():
    assert normalize("SELECT * FROM t WHERE id IN (1, 2, 3) AND name = 'x''y'") == normalize(
        "SELECT *  FROM t WHERE id IN (4,5) AND name = 'z'"
    )
    assert normalize('INSERT INTO "t" ("a") VALUES (%s), (%s), (%s)') == 'INSERT INTO "t" ("a") VALUES (?)'
    assert normalize("INSERT INTO t (a, b) VALUES (%s, %s), (%s, %s)") == "INSERT INTO t (a, b) VALUES (...)"
    assert normalize('SELECT "t1"."c2" FROM "t1" LIMIT 21') == 'SELECT "t1"."c2" FROM "t1" LIMIT ?'


def test_params_are_masked():
    assert mask_params(["secret", 42, None, b"xy"]) == ["<str:6>", "<int>", None, "<bytes:2>"]
    assert mask_params({"password": "hunter2"}) == {"password": "<str:7>"}
    assert mask_params([("a", 1), ("b", 2)], many=True) == {"rows": 2, "first": ["<str:1>", "<int>"]}
    assert mask_params(([1, 2, 3], ["x"])) == ["<list:3>", "<list:1>"]  # array parameters, not rows
    long = mask_params(list(range(5000)))
    assert long[:2] == ["<int>", "<int>"]
    assert long[-1] == "... 4980 more"
    assert len(long) == 21


@override_settings(SCALEOPS_MONITOR_MAX_FINGERPRINTS=3)
@pytest.mark.django_db
def test_fingerprints_are_bounded(monitoring):
    with connection.cursor() as cursor:
        for column in range(6):
            cursor.execute(f"SELECT {column} AS c{column}")
    stats = monitor.snapshot()
    assert len(stats.fingerprints) == 4  # three statements and "other"
    assert stats.fingerprints["other"].count == 3


@pytest.mark.django_db
def test_n_plus_one_hint_once_per_request(monitoring, client, settings, caplog):
    from tests.monitoringapp.models import Probe

    settings.ROOT_URLCONF = "tests.monitoringapp.urls"
    Probe.objects.bulk_create([Probe(name=f"p{i}") for i in range(12)])
    caplog.set_level(logging.WARNING, logger=SLOW_LOGGER)
    assert client.get("/n-plus-one").status_code == 200
    hints = [json.loads(r.getMessage()) for r in caplog.records if r.name == SLOW_LOGGER]
    assert [h["event"] for h in hints] == ["n_plus_one"]
    assert hints[0]["count"] == 10
    assert "monitoringapp/views.py" in hints[0]["call_site"]
    # Outside a request, no hint: a command looping over rows is not a request's N+1.
    for pk in Probe.objects.values_list("pk", flat=True):
        Probe.objects.get(pk=pk)
    assert len([r for r in caplog.records if r.name == SLOW_LOGGER]) == 1
    assert monitor.snapshot().n_plus_one == 1


@pytest.mark.django_db(transaction=True)
def test_n_plus_one_hint_in_async_views(monitoring, async_client, settings, caplog):
    settings.MIDDLEWARE = ["django_scaleops.monitoring.middleware.QueryScopeMiddleware", *settings.MIDDLEWARE]
    from asgiref.sync import async_to_sync

    from tests.monitoringapp.models import Probe

    settings.ROOT_URLCONF = "tests.monitoringapp.urls"
    Probe.objects.bulk_create([Probe(name=f"p{i}") for i in range(12)])
    caplog.set_level(logging.WARNING, logger=SLOW_LOGGER)

    async def fetch():
        return (await async_client.get("/async/n-plus-one")).status_code

    assert async_to_sync(fetch)() == 200
    hints = [json.loads(r.getMessage()) for r in caplog.records if r.name == SLOW_LOGGER]
    assert [h["event"] for h in hints] == ["n_plus_one"]


# ---- health


@pytest.mark.parametrize(
    ("slow", "expected"),
    [(0, "healthy"), (499, "healthy"), (500, "degraded"), (1000, "degraded"), (1001, "unhealthy")],
)
def test_health_boundaries(slow, expected):
    assert classify(10_000, slow, min_sample=100, degraded=0.05, unhealthy=0.10) == expected


def test_health_needs_a_minimum_sample():
    assert classify(0, 0, min_sample=100, degraded=0.05, unhealthy=0.10) == "unknown"
    assert classify(99, 50, min_sample=100, degraded=0.05, unhealthy=0.10) == "unknown"
    assert classify(100, 50, min_sample=100, degraded=0.05, unhealthy=0.10) == "unhealthy"


@pytest.mark.parametrize(("slow", "expected"), [(499, "healthy"), (500, "degraded"), (1001, "unhealthy")])
@override_settings(SCALEOPS_MONITOR_CACHE_ALIAS=None)
def test_health_from_the_sliding_window(monitoring, slow, expected):
    assert query_report()["health"]["status"] == "unknown"  # an empty window
    for index in range(10_000):
        duration_ns = 200_000_000 if index < slow else 1_000_000
        monitor.record("default", "SELECT 1", duration_ns)
    report = query_report()
    assert report["scope"] == "process"
    assert report["health"] == {
        "status": expected,
        "window_seconds": 60,
        "queries": 10_000,
        "slow": slow,
        "slow_share": slow / 10_000,
        "min_sample": 100,
    }
    assert report["slow"] == slow


def test_window_forgets_old_seconds():
    from django_scaleops.monitoring.stats import QueryStats

    stats = QueryStats()
    stats.window = {1000: [50, 50], 1059: [10, 1], 1060: [5, 0]}
    assert stats.window_counts(1060, 60) == (15, 1)  # second 1000 is out of the 60 s window


# ---- fleet aggregation through Redis


@pytest.mark.django_db
def test_flush_sums_into_redis_and_report_reads_it(monitoring):
    with connection.cursor() as cursor:
        for value in range(25):
            cursor.execute("SELECT %s", [value])
    assert monitor.flush()
    assert monitor.flush()  # a second flush sends nothing twice
    report = query_report()
    assert report["scope"] == "fleet"
    assert report["aliases"]["default"]["queries"] == 25
    top = report["top_slow_fingerprints"][0]
    assert (top["statement"], top["queries"]) == ("SELECT ?", 25)
    assert report["duration_ms"]["p50"] > 0


@pytest.mark.services
@pytest.mark.django_db
def test_flush_survives_redis_outage(monitoring, services):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    services.redis.stop()
    try:
        assert not monitor.flush()
        assert query_report()["scope"] == "process"
    finally:
        services.redis.start()
    assert monitor.flush()  # what could not be sent is sent now
    stats = aggregate.read(aggregate.redis_client(), monitoring_prefix())
    assert stats.aliases["default"].count == 1


def monitoring_prefix() -> str:
    from django_scaleops.conf import conf

    return conf.SCALEOPS_MONITOR_REDIS_PREFIX


WORKER = """
import django, sys
django.setup()
from django.db import connection
from django.test.utils import override_settings
override_settings(SCALEOPS_MONITOR_ENABLED=True, SCALEOPS_MONITOR_REDIS_PREFIX=sys.argv[1],
                  SCALEOPS_MONITOR_FLUSH_INTERVAL=0.2).enable()
with connection.cursor() as cursor:
    for value in range(1000):
        cursor.execute("SELECT %s", [value])
# No explicit flush: the flusher thread and the exit hook report, as in a gunicorn worker.
"""


def test_four_processes_report_their_sum(monitoring):
    import os
    import subprocess
    import sys

    prefix = monitoring_prefix()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, prefix], env=env) for _ in range(4)]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0, 0, 0]
    stats = aggregate.read(aggregate.redis_client(), prefix)
    assert stats.aliases["default"].count == 4000
    assert sum(hist.count for hist in stats.fingerprints.values()) == 4000


# ---- system checks


def monitoring_check_ids():
    from django.core.checks import run_checks

    return sorted(m.id for m in run_checks() if m.id and m.id.startswith(("scaleops.E65", "scaleops.W65")))


def test_checks_are_clean_by_default():
    assert monitoring_check_ids() == []


@override_settings(
    SCALEOPS_MONITOR_DEGRADED_SHARE=0.2,
    SCALEOPS_MONITOR_UNHEALTHY_SHARE=0.1,
    SCALEOPS_MONITOR_SLOW_QUERY_MS=0,
    SCALEOPS_MONITOR_TOKEN="short",
)
def test_bad_monitor_settings_are_flagged():
    assert monitoring_check_ids() == ["scaleops.E651", "scaleops.W652"]


@override_settings(
    SCALEOPS_MONITOR_CACHE_ALIAS="locmem",
    CACHES={
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    },
)
def test_aggregation_needs_a_django_redis_cache(monitoring):
    assert monitoring_check_ids() == ["scaleops.W651"]
