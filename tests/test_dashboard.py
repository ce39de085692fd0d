"""The operations dashboard against the launcher's real servers: access, each panel's figures
after real traffic (the database, Redis or PgBouncer as oracle), the history sampler's bounds and
one-writer-per-minute rule, the SVG charts, and panels that degrade on their own."""

from __future__ import annotations

import re
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.db import connection, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client, override_settings
from django.urls import include, path

from django_scaleops.cache.backend import gate
from django_scaleops.conf import conf
from django_scaleops.dashboard import sampler
from django_scaleops.dashboard.sampler import History, sample
from django_scaleops.models import ApiKey, Tier
from django_scaleops.monitoring import aggregate
from django_scaleops.monitoring.monitor import monitor
from django_scaleops.partitioning.introspection import partitions
from django_scaleops.pgbouncer.metrics import clear_metrics_cache, get_pool_metrics
from django_scaleops.ratelimit import limiter
from django_scaleops.ratelimit.analytics import live_usage
from django_scaleops.ratelimit.callers import tier_cache
from django_scaleops.ratelimit.resolver import key_cache
from tests.partitionapp.models import Event
from tests.router_helpers import fresh_routing, router_settings, wait_for_replay

URL = "/admin/scaleops/dashboard/"
DATABASES = list(settings.DATABASES)
HARNESS = {"pgbouncer": {"pool_mode": "transaction", "direct": "default"}}
MIDDLEWARE_PATH = "django_scaleops.ratelimit.middleware.ApiKeyThrottleMiddleware"


def ok_view(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"ok": True})


urlpatterns = [
    path("admin/", admin.site.urls),
    path("ok/", ok_view),
    path("", include("django_scaleops.monitoring.urls")),
]


@pytest.fixture(autouse=True)
def dashboard(settings: Any) -> Iterator[str]:
    """A fresh history and query-monitor prefix per test, and the PgBouncer alias declared."""
    tag = uuid.uuid4().hex[:8]
    settings.ROOT_URLCONF = __name__
    with override_settings(
        SCALEOPS_DASHBOARD_REDIS_PREFIX=f"test-dash-{tag}",
        SCALEOPS_MONITOR_ENABLED=True,
        SCALEOPS_MONITOR_REDIS_PREFIX=f"test-dash-qm-{tag}",
        SCALEOPS_MONITOR_SLOW_QUERY_MS=50,
        SCALEOPS_PGBOUNCER_ALIASES=HARNESS,
    ):
        monitor.reset()
        clear_metrics_cache()
        key_cache.clear()
        tier_cache.clear()
        limiter.breaker.reset()
        yield f"test-dash-{tag}"
        try:
            History.default().clear()
            aggregate.clear(aggregate.redis_client(), f"test-dash-qm-{tag}")
        except Exception:  # a test that stopped Redis restarted it; a leftover prefix is harmless
            pass
    monitor.reset()


def staff_client(**extra: Any) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser(f"admin-{uuid.uuid4().hex[:6]}", password="x", **extra))
    return client


def page(client: Client, query: str = "") -> str:
    response = client.get(URL + query)
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def panel(html: str, panel_id: str) -> str:
    found = re.search(rf'<section class="([^"]*)" id="panel-{panel_id}".*?</section>', html, re.S)
    assert found, f"no panel {panel_id}"
    return found.group(0)


def is_unavailable(section: str) -> bool:
    return "scaleops-unavailable" in section.split(">", 1)[0]


def svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(svg) for svg in re.findall(r'<svg class="scaleops-chart".*?</svg>', html, re.S)]


def series_of(svg: ET.Element) -> dict[str, ET.Element]:
    ns = "{http://www.w3.org/2000/svg}"
    return {e.get("data-series", ""): e for e in [*svg.iter(f"{ns}polyline"), *svg.iter(f"{ns}path")]}


def fleet_stats() -> Any:
    monitor.flush()
    return aggregate.read(aggregate.redis_client(), conf.SCALEOPS_MONITOR_REDIS_PREFIX)


# ---- access


@pytest.mark.django_db
def test_only_staff_with_the_view_permission_see_the_dashboard():
    anonymous = Client().get(URL)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/")

    plain = Client()
    plain.force_login(User.objects.create_user("plain", password="x"))
    refused = plain.get(URL)
    assert refused.status_code == 302 and refused["Location"].startswith("/admin/login/")

    staff = Client()
    member = User.objects.create_user("staff", password="x", is_staff=True)
    staff.force_login(member)
    assert staff.get(URL).status_code == 403
    assert URL not in staff.get("/admin/").content.decode()
    member.user_permissions.add(Permission.objects.get(codename="view_dashboard", content_type__app_label="scaleops"))
    staff = Client()
    staff.force_login(User.objects.get(pk=member.pk))
    assert staff.get(URL).status_code == 200
    assert URL in staff.get("/admin/").content.decode()  # linked from the admin index

    response = staff_client().get(URL)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"] or "no-cache" in response["Cache-Control"]
    assert '<meta http-equiv="refresh" content="30">' in response.content.decode()


@pytest.mark.django_db
def test_the_model_has_no_table():
    from django_scaleops.models import Dashboard

    assert Dashboard._meta.managed is False
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [Dashboard._meta.db_table])
        assert cursor.fetchone() == (None,)


# ---- the sampler


@pytest.mark.django_db
def test_two_processes_in_one_minute_write_one_point_and_counters_become_deltas():
    history = History.default()
    t0 = (time.time() // 60) * 60 + 1
    first = sample(now=t0, history=history)
    again = sample(now=t0 + 30, history=History.default())  # another process, same minute
    assert first.written and not again.written and "already sampled" in again.reason
    assert history.client.llen(history.key("s:pgb.pgbouncer.cl_active")) == 1

    before = fleet_stats()
    with connection.cursor() as cursor:
        for _ in range(25):
            cursor.execute("SELECT 1")
        for _ in range(3):
            cursor.execute("SELECT pg_sleep(0.06)")
    after = fleet_stats()
    expected = sum(h.count for h in after.aliases.values()) - sum(h.count for h in before.aliases.values())
    expected_slow = sum(after.alias_slow.values()) - sum(before.alias_slow.values())
    second = sample(now=t0 + 60, history=history)
    assert second.written, second.errors
    minute, count = second.points["q.count"]
    assert minute == int((t0 + 60) // 60)
    # The sample's own reads go through the same monitor: at least what we ran, a few more at most.
    assert expected <= count <= expected + 10
    assert second.points["q.slow"][1] == expected_slow >= 3
    assert second.points["q.p99"][1] >= 50  # the pg_sleep(0.06), in ms
    points = history.read(["q.count"], minute - 5)["q.count"]
    assert points == [(minute, count)]


def test_history_keeps_a_bounded_number_of_points_per_series():
    history = History.default()
    start = int(time.time() // 60) - 1500
    for offset in range(1500):  # more than a day
        history.append({"a": (start + offset, float(offset)), "b": (start + offset, 0.5)})
    assert history.points == 1440
    for name in ("a", "b"):
        assert history.client.llen(history.key(f"s:{name}")) == 1440
    kept = history.read(["a"], 0)["a"]
    assert kept[0] == (start + 60, 60.0) and kept[-1] == (start + 1499, 1499.0)  # the oldest 60 are gone
    # Documented bound (docs/dashboard.md): under 40 KB a series for a day.
    assert history.client.memory_usage(history.key("s:a")) < 40_000
    # A series that stops (a prefix gone) is dropped once its newest point leaves the history.
    history.append({"a": (start + 1500 + 1440, 1.0)})
    assert "b" not in history.series() and not history.client.exists(history.key("s:b"))


@pytest.mark.django_db
def test_sample_command_dry_run_prints_and_writes_nothing_then_one_write_per_minute():
    out = StringIO()
    call_command("scaleops_sample", "--dry-run", stdout=out, stderr=StringIO())
    assert "would write" in out.getvalue() and "pgb.pgbouncer.cl_active" in out.getvalue()
    assert History.default().series() == []
    wrote_minutes: list[str] = []
    for _ in range(3):
        out = StringIO()
        call_command("scaleops_sample", stdout=out, stderr=StringIO())
        written = re.match(r"minute (\d+): wrote", out.getvalue())
        if written is None:
            break
        wrote_minutes.append(written.group(1))
    # The first run writes; a second run writes only if the minute turned in between (once at most).
    assert len(wrote_minutes) in (1, 2) and len(set(wrote_minutes)) == len(wrote_minutes), wrote_minutes
    assert "nothing written (another process already sampled this minute)" in out.getvalue()


@pytest.mark.django_db
def test_processes_sample_after_requests_only_when_switched_on():
    client = staff_client()
    sampler.reset_schedule()
    client.get("/admin/")
    time.sleep(0.3)
    assert History.default().series() == []
    with override_settings(SCALEOPS_DASHBOARD_SAMPLE=True):
        client.get("/admin/")
        deadline = time.monotonic() + 10
        while not History.default().series() and time.monotonic() < deadline:
            time.sleep(0.1)
    assert "pgb.pgbouncer.cl_active" in History.default().series()


# ---- panels after traffic


@pytest.mark.django_db
def test_queries_panel_and_chart_follow_the_fleet_figures():
    with connection.cursor() as cursor:
        for _ in range(12):
            cursor.execute("SELECT pg_sleep(0.055)")
        for _ in range(30):
            cursor.execute("SELECT 2")
    history = History.default()
    end = int(time.time() // 60)
    for offset in range(90):  # 90 minutes: 60 fall in the default 1 h range, 61 with its end
        minute = end - 89 + offset
        history.append({"q.p50": (minute, 1.0 + offset), "q.p95": (minute, 2.0), "q.slow_share": (minute, 0.1)})
    stats = fleet_stats()
    html = page(staff_client())
    section = panel(html, "queries")
    assert not is_unavailable(section)
    slow_fp = next(fp for fp, text in stats.fingerprint_text.items() if "pg_sleep" in text)
    row = re.search(rf'<tr data-fingerprint="{slow_fp}">.*?</tr>', section, re.S)
    assert row, "the slow statement is listed"
    count = int(re.search(r'class="count">(\d+)<', row.group(0)).group(1))  # type: ignore[union-attr]
    slow = int(re.search(r'class="slow">(\d+)<', row.group(0)).group(1))  # type: ignore[union-attr]
    assert count == stats.fingerprints[slow_fp].count >= 12
    assert slow == stats.fingerprint_slow[slow_fp] >= 12
    assert "test_dashboard.py" in row.group(0)  # the call site, from the slow-query events

    charts = svgs(section)
    assert len(charts) == 2  # percentiles and slow share; no point of queries per minute was written
    assert section.count("unavailable: no history yet") == 1
    lines = series_of(charts[0])
    expected = len(history.read(["q.p50"], end - 60)["q.p50"])
    assert expected == 61
    assert set(lines) == {"p50", "p95"}  # no p99 point was written
    assert int(lines["p50"].get("data-points", "")) == expected
    assert len(lines["p50"].get("points", "").split()) == expected
    assert "ms" in (charts[0].findtext("{http://www.w3.org/2000/svg}title") or "")
    wide = svgs(panel(page(staff_client(), "?range=24h"), "queries"))[0]
    assert int(series_of(wide)["p50"].get("data-points", "")) == 90


@pytest.mark.django_db
def test_ratelimit_panel_ranks_keys_as_redis_counts_them():
    tier = Tier.objects.create(name=f"t-{uuid.uuid4().hex[:6]}", requests_per_period=3, period_seconds=60, burst=0)
    busy, busy_secret = ApiKey.create_key(name="busy", tier=tier)
    quiet, quiet_secret = ApiKey.create_key(name="quiet", tier=tier)
    client = Client()
    with override_settings(MIDDLEWARE=[MIDDLEWARE_PATH, *settings.MIDDLEWARE]):
        statuses = [
            client.get("/ok/", headers={"Authorization": f"Api-Key {busy_secret}"}).status_code for _ in range(8)
        ]
        client.get("/ok/", headers={"Authorization": f"Api-Key {quiet_secret}"})
    assert 429 in statuses
    oracle = {key.pk: [sum(c[i] for c in live_usage(key.pk).values()) for i in (0, 1)] for key in (busy, quiet)}
    assert oracle[busy.pk][1] >= 1

    html = page(staff_client())
    section = panel(html, "ratelimit")
    assert not is_unavailable(section)
    by_use, by_refusals = re.findall(r'<table class="scaleops-top-keys".*?</table>', section, re.S)
    rows = re.findall(r'<a href="([^"]+)">(\w+)</a>.*?class="allowed">(\d+)<.*?class="limited">(\d+)<', by_use, re.S)
    assert [(name, int(a), int(b)) for _, name, a, b in rows[:2]] == [
        ("busy", *oracle[busy.pk]),
        ("quiet", *oracle[quiet.pk]),
    ]
    assert rows[0][0] == f"/admin/scaleops/apikey/{busy.pk}/change/"
    assert "busy" in by_refusals and "quiet" not in by_refusals

    # The sampler's per-tier point for the minute just counted equals the Redis counters of it.
    minute = int(time.time() // 60)
    usage = sampler.tier_usage(minute)
    per_minute = [sum(live_usage(k.pk).get(minute, [0, 0])[i] for k in (busy, quiet)) for i in (0, 1)]
    assert list(usage[tier.name]) == per_minute


@pytest.mark.django_db(transaction=True, databases=["default", "pgbouncer"])
def test_pgbouncer_panel_shows_the_console_figures():
    connections["pgbouncer"].close()  # a connection left by an earlier test may be gone
    with connections["pgbouncer"].cursor() as cursor:
        cursor.execute("SELECT 1")
    html = page(staff_client())
    section = panel(html, "pgbouncer")
    assert not is_unavailable(section)
    oracle = get_pool_metrics("pgbouncer")
    for pool in oracle.pools:
        row = re.search(rf'<tr data-pool="{pool.database}/{pool.user}">.*?</tr>', section, re.S)
        assert row, pool
        assert f'class="sv_idle">{pool.sv_idle}<' in row.group(
            0
        ) or f'class="sv_active">{pool.sv_active}<' in row.group(0)
    assert len(re.findall(r"<tr data-pool=", section)) == len(oracle.pools)


@pytest.mark.django_db
def test_partitions_panel_counts_rows_waiting_in_default_and_draws_each_partition():
    far = datetime(2099, 1, 15, tzinfo=UTC)  # no partition this far ahead: the rows go to default
    Event.objects.bulk_create([Event(name=f"late {i}", created_at=far) for i in range(7)])
    found = partitions(connection, Event._meta.db_table)
    default = next(p for p in found if p.is_default)
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT count(*) FROM "{default.name}"')
        waiting = cursor.fetchone()[0]
    html = page(staff_client())
    section = panel(html, "partitions")
    assert not is_unavailable(section)
    block = re.search(
        r'<div class="scaleops-partition-table" data-model="partitionapp.Event".*?</figure>', section, re.S
    )
    assert block
    assert f'<span class="waiting">{waiting}</span>' in block.group(0) and waiting >= 7
    assert "python manage.py ensure_partitions --model partitionapp.Event --rescue-default" in block.group(0)
    [chart] = svgs(block.group(0))
    [bars] = series_of(chart).values()
    assert int(bars.get("data-points", "")) == len(found)
    assert bars.get("d", "").count("Z") == len(found)


@pytest.mark.django_db(transaction=True, databases=["default", "replica"])
def test_replicas_panel_shows_state_and_queries_served():
    with router_settings(), fresh_routing():
        wait_for_replay()
        from tests.routerapp.models import Note

        list(Note.objects.all()[:5])
        list(Note.objects.all()[:5])
        stats = fleet_stats()
        html = page(staff_client())
    section = panel(html, "replicas")
    assert not is_unavailable(section)
    row = re.search(r'<tr data-alias="replica">.*?</tr>', section, re.S)
    assert row and 'class="state">healthy<' in row.group(0)
    served = int(re.search(r'class="served">(\d+)<', row.group(0)).group(1))  # type: ignore[union-attr]
    assert served == stats.aliases["replica"].count >= 2


# ---- degrading panel by panel


@pytest.mark.services
@pytest.mark.django_db
def test_redis_down_makes_its_panels_unavailable_and_the_rest_still_render(services):
    client = staff_client()
    page(client)  # warm: connections, templates
    services.redis.stop()
    try:
        with override_settings(CACHES=fast_caches()):
            gate.reset_state()
            html = page(client)
    finally:
        services.redis.start()
        gate.reset_state()
    for panel_id in ("cache", "ratelimit"):
        section = panel(html, panel_id)
        assert is_unavailable(section) and "unavailable: " in section
    assert "Redis" in panel(html, "ratelimit")
    assert not is_unavailable(panel(html, "partitions"))
    assert svgs(panel(html, "partitions"))
    assert not is_unavailable(panel(html, "pgbouncer"))
    queries = panel(html, "queries")
    assert not is_unavailable(queries) and "figures of the process" in queries
    assert "unavailable: history unavailable" in queries


@pytest.mark.services
@pytest.mark.django_db
def test_pgbouncer_down_makes_only_its_panel_unavailable(services):
    client = staff_client()
    services.pgbouncer.stop()
    try:
        clear_metrics_cache()
        html = page(client)
    finally:
        services.pgbouncer.start()
        clear_metrics_cache()
        connections["pgbouncer"].close()  # the restart dropped it: later tests would get a dead one
    section = panel(html, "pgbouncer")
    assert is_unavailable(section) and "unavailable: cannot reach the admin console of pgbouncer" in section
    for panel_id in ("queries", "cache", "ratelimit", "partitions"):
        assert not is_unavailable(panel(html, panel_id)), panel_id


def fast_caches() -> dict[str, Any]:
    default = settings.CACHES["default"]
    options = {**default["OPTIONS"], "SOCKET_CONNECT_TIMEOUT": 0.25, "SOCKET_TIMEOUT": 0.25}
    return {"default": {**default, "OPTIONS": options}}


def test_an_unavailable_reason_never_shows_a_password():
    from django_scaleops.dashboard.panels import _reason

    secret = "Tr0ub4dor-and-3-more-words"
    reason = _reason(ConnectionError(f"could not connect to postgresql://app:{secret}@db.internal:5432/app"))
    assert reason.startswith("ConnectionError: could not connect to")
    assert secret not in reason


@pytest.mark.django_db(transaction=True)
def test_cache_panel_counts_lookups_and_invalidations_of_the_fleet():
    from django_scaleops.cache import cluster
    from tests.cacheapp.models import Author

    client = staff_client()  # before the counts: logging in writes rows too
    cluster.reset()
    history = History.default()
    t0 = (time.time() // 60) * 60 + 1
    assert sample(now=t0, history=history).written  # the counters' baseline

    def fleet() -> dict[str, Any]:
        cluster.flush()  # this process's counts, as the next cached read would send them
        return cluster.snapshot()

    Author.objects.create(name="first")
    first = fleet()["invalidations"]
    per_write = first  # stamps one committed write to the table bumps (its cascades included)
    assert per_write >= 1, "a committed write bumped no stamp (or was not counted)"
    for n in range(3):
        Author.objects.create(name=f"more {n}")
    for _ in range(3):  # one miss, then hits
        assert list(Author.objects.filter(name="first").cached()) != []
    figures = fleet()
    assert figures["invalidations"] == 4 * per_write
    assert figures["prefixes"]["cacheapp.author"]["misses"] == 1
    assert figures["prefixes"]["cacheapp.author"]["hits"] == 2

    second = sample(now=t0 + 60, history=history)
    assert second.written, second.errors
    assert second.points["c.invalidations"][1] == 4 * per_write
    section = panel(page(client), "cache")
    assert not is_unavailable(section), section
    assert f'<span class="invalidations">{4 * per_write}</span>' in section
    assert re.search(r'<tr data-prefix="cacheapp.author"><td>cacheapp.author</td><td class="hits">2</td>', section)


def test_counter_deltas_keep_large_totals_exact_and_spread_a_gap_over_its_minutes():
    history = History.default()
    minute = int(time.time() // 60)
    assert history.deltas({"big": 123_456_789.0}, minute) == ({}, 1)  # the first sample: a baseline
    assert history.deltas({"big": 123_456_790.0}, minute + 1) == ({"big": 1.0}, 1)
    # Ten minutes without a sample (cron stopped): 600 more is 60 a minute, not a spike of 600.
    assert history.deltas({"big": 123_457_390.0}, minute + 11) == ({"big": 60.0}, 10)
    assert history.deltas({"big": 5.0}, minute + 12) == ({"big": 5.0}, 1)  # reset: counts from zero


@pytest.mark.django_db
def test_queries_per_minute_after_a_gap_are_an_average():
    history = History.default()
    t0 = (time.time() // 60) * 60 + 1
    assert sample(now=t0, history=history).written
    before = fleet_stats()
    with connection.cursor() as cursor:
        for _ in range(40):
            cursor.execute("SELECT 1")
    after = fleet_stats()
    ran = sum(h.count for h in after.aliases.values()) - sum(h.count for h in before.aliases.values())
    later = sample(now=t0 + 4 * 60, history=history)
    assert later.written, later.errors
    per_minute = later.points["q.count"][1]
    assert ran / 4 <= per_minute <= (ran + 10) / 4, (ran, per_minute)


def test_call_sites_are_shown_relative_to_their_import_root():
    import django_scaleops
    from django_scaleops.dashboard.panels import short_call_site

    package_file = django_scaleops.__file__
    site = f"{package_file}:12 in handler"
    assert short_call_site(site) == "django_scaleops/__init__.py:12 in handler"
    assert short_call_site("<console>:1 in <module>") == "<console>:1 in <module>"


def test_chart_labels_from_user_data_are_escaped():
    from django_scaleops.dashboard.charts import Series, bar_chart, line_chart

    hostile = '"><script>alert(1)</script><svg onload="x'
    minute = int(time.time() // 60)
    drawn = [
        line_chart(
            hostile, [Series(hostile, [(minute - 1, 1.0), (minute, 2.0)])], start=minute - 5, end=minute, unit=hostile
        ),
        bar_chart(hostile, [hostile, "b"], [1.0, 2.0], unit=hostile),
    ]
    for html in drawn:
        assert "<script" not in html and 'onload="' not in html
        for svg in re.findall(r"<svg.*?</svg>", html, re.S):
            ET.fromstring(svg)  # still well-formed XML
