"""The metrics and health endpoints: protected, cheap, and not sampled themselves."""

from __future__ import annotations

import time
import uuid

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import override_settings

from django_scaleops import metrics
from django_scaleops.monitoring import aggregate
from django_scaleops.monitoring.health import register_probe, unregister_probe
from django_scaleops.monitoring.monitor import monitor

TOKEN = "t0ken-for-tests-only-0123456789abcdef"
URLS = ["/ops/metrics/queries", "/ops/metrics", "/ops/health/", "/ops/health/live"]
# The health endpoint checks every alias, so the tests may use every alias.
DATABASES = list(settings.DATABASES)


@pytest.fixture(autouse=True)
def endpoints(settings):
    prefix = f"test-qm-{uuid.uuid4().hex[:8]}"
    settings.ROOT_URLCONF = "tests.monitoringapp.urls"
    with override_settings(
        SCALEOPS_MONITOR_ENABLED=True, SCALEOPS_MONITOR_REDIS_PREFIX=prefix, SCALEOPS_MONITOR_TOKEN=TOKEN
    ):
        monitor.reset()
        yield
        aggregate.clear(aggregate.redis_client(), prefix)
    monitor.reset()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


@pytest.mark.django_db(databases=DATABASES)
@pytest.mark.parametrize("url", URLS)
def test_anonymous_callers_are_refused(client, url):
    response = client.get(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "no-store" in response["Cache-Control"]


@pytest.mark.django_db(databases=DATABASES)
@pytest.mark.parametrize("url", URLS)
def test_wrong_token_and_non_staff_are_forbidden(client, url):
    assert client.get(url, **bearer("wrong")).status_code == 403
    client.force_login(User.objects.create_user("plain", password="x"))
    assert client.get(url).status_code == 403


@pytest.mark.django_db(databases=DATABASES)
@override_settings(SCALEOPS_MONITOR_TOKEN=None)
def test_no_token_configured_means_staff_only(client):
    assert client.get("/ops/metrics/queries", **bearer("anything")).status_code == 403
    client.force_login(User.objects.create_user("staff", password="x", is_staff=True))
    assert client.get("/ops/metrics/queries").status_code == 200


@pytest.mark.django_db(databases=DATABASES)
@pytest.mark.parametrize("url", URLS)
def test_token_opens_every_endpoint(client, url):
    assert client.get(url, **bearer()).status_code == 200


@pytest.mark.django_db
def test_query_metrics_json_with_sources_and_own_queries_not_counted(client):
    metrics.register_source("test_source", lambda: {"hits": 7, "nested": {"ratio": 0.5}})
    try:
        with connection.cursor() as cursor:
            for _ in range(3):
                cursor.execute("SELECT pg_sleep(0.11)")
            for _ in range(7):
                cursor.execute("SELECT 1")
        body = client.get("/ops/metrics/queries", **bearer()).json()
        client.get("/ops/health/", **bearer())
        again = client.get("/ops/metrics/queries", **bearer()).json()
    finally:
        metrics.unregister_source("test_source")
    assert body["scope"] == "fleet"
    assert (body["queries"], body["slow"]) == (10, 3)
    assert again["queries"] == 10  # the endpoints' own queries (health probes) are not sampled
    assert body["aliases"]["default"]["duration_ms"]["p99"] >= 110
    assert body["top_slow_fingerprints"][0]["statement"] == "SELECT pg_sleep(?)"
    assert body["top_slow_fingerprints"][0]["slow"] == 3
    assert body["sources"]["test_source"] == {"hits": 7, "nested": {"ratio": 0.5}}
    assert set(body["health"]) >= {"status", "slow_share", "window_seconds", "min_sample"}


@pytest.mark.django_db
def test_prometheus_text(client):
    metrics.register_source("test_source", lambda: {"hits": 7, "up": True, "label": "ignored"})
    try:
        with connection.cursor() as cursor:
            for _ in range(4):
                cursor.execute("SELECT 1")
        response = client.get("/ops/metrics", **bearer())
    finally:
        metrics.unregister_source("test_source")
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.content.decode()
    assert "# TYPE scaleops_queries_total counter" in text
    assert 'scaleops_queries_total{alias="default"} 4.0' in text
    assert "# TYPE scaleops_query_duration_seconds histogram" in text
    assert 'scaleops_query_duration_seconds_bucket{alias="default",le="+Inf"} 4.0' in text
    assert 'scaleops_query_duration_seconds_count{alias="default"} 4.0' in text
    assert 'scaleops_query_health{status="unknown"} 1.0' in text
    # A source without a Prometheus translation: its figures as labels of one generic gauge.
    assert 'scaleops_source_value{figure="hits",source="test_source"} 7.0' in text
    assert 'scaleops_source_value{figure="up",source="test_source"} 1.0' in text
    assert 'scaleops_metrics_source_up{source="test_source"} 1.0' in text
    assert "label" not in text.replace('"', " ").split()  # text figures are not published
    assert "quantile" not in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2, line


@pytest.mark.django_db(databases=DATABASES)
def test_health_reports_every_dependency(client):
    body = client.get("/ops/health/", **bearer()).json()
    assert body["status"] == "ok"
    assert body["ready"] is True
    checks = body["checks"]
    assert checks["database:default"]["role"] == "primary"
    assert checks["database:replica"]["role"] == "replica"
    assert checks["database:pgbouncer"]["ok"] is True
    assert checks["redis:default"]["ok"] is True
    assert body["queries"]["status"] == "unknown"


@pytest.mark.django_db(databases=DATABASES)
def test_registered_probes_count_and_critical_failures_fail_readiness(client):
    def broken():
        raise ConnectionError("password=hunter2 host=10.0.0.1")

    register_probe("pgbouncer:pools", lambda: {"ok": True, "waiting": 0})
    register_probe("broken", broken, critical=True)
    try:
        response = client.get("/ops/health/", **bearer())
    finally:
        unregister_probe("pgbouncer:pools")
        unregister_probe("broken")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["pgbouncer:pools"]["waiting"] == 0
    assert body["checks"]["broken"] == {"ok": False, "error": "ConnectionError", "ms": body["checks"]["broken"]["ms"]}
    assert "hunter2" not in response.content.decode()


@pytest.mark.services
@pytest.mark.django_db(databases=DATABASES, transaction=True)  # a broken connection must be able to close
def test_replica_down_degrades_and_critical_replica_fails(client, services):
    services.replica.stop("immediate")
    try:
        response = client.get("/ops/health/", **bearer())
        assert response.status_code == 200
        assert response.json()["status"] == "degraded"
        assert response.json()["checks"]["database:replica"]["ok"] is False
        with override_settings(SCALEOPS_MONITOR_HEALTH_CRITICAL=["default", "replica"]):
            response = client.get("/ops/health/", **bearer())
        assert response.status_code == 503
        assert response.json()["status"] == "down"
    finally:
        services.replica.start()
    # The standby accepts connections once it has replayed to a consistent state.
    deadline = time.monotonic() + 20
    while (body := client.get("/ops/health/", **bearer()).json())["status"] != "ok" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert body["status"] == "ok", body


@pytest.mark.services
@pytest.mark.django_db(databases=DATABASES)
def test_redis_down_degrades_health_and_metrics_fall_back_to_the_process(client, services):
    services.redis.stop()
    try:
        health = client.get("/ops/health/", **bearer())
        assert health.status_code == 200
        assert health.json()["checks"]["redis:default"]["ok"] is False
        assert client.get("/ops/metrics/queries", **bearer()).json()["scope"] == "process"
    finally:
        services.redis.start()


@pytest.mark.django_db
def test_post_is_refused(client):
    assert client.post("/ops/metrics/queries", **bearer()).status_code == 405
