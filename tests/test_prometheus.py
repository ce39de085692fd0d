"""``/metrics`` judged by Prometheus' own tools: every source filled from the real services, the
page checked by ``promtool check metrics`` and parsed by ``prometheus_client``, its figures
compared with what PostgreSQL, PgBouncer and Redis say, and the Grafana dashboard's PromQL
checked against the page."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import connections
from django.test import Client, override_settings
from django_redis import get_redis_connection
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from django_scaleops import metrics
from django_scaleops.apm import record_metric
from django_scaleops.cache import cached_function
from django_scaleops.cache.backend import gate
from django_scaleops.monitoring import aggregate
from django_scaleops.monitoring.monitor import monitor
from django_scaleops.partitioning.config import partitioned_models
from django_scaleops.pgbouncer.aliases import pooled_alias
from django_scaleops.pgbouncer.metrics import clear_metrics_cache
from django_scaleops.ratelimit import guard, limiter
from django_scaleops.ratelimit.policy import Policy
from django_scaleops.replicas.routing import replica_status
from django_scaleops.replicas.state import reset_routing_state
from django_scaleops.routers import use_primary
from django_scaleops.testing.routing import assert_reads_from
from tests.bulkapp.models import Item
from tests.router_helpers import fresh_routing, router_settings, wait_for_replay
from tests.routerapp.models import Note

TOKEN = "t0ken-for-prometheus-tests-0123456789"
ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "django_scaleops" / "dashboard" / "grafana.json"
DOCS = ROOT / "docs" / "monitoring.md"
THROTTLE_MIDDLEWARE = "django_scaleops.ratelimit.middleware.ApiKeyThrottleMiddleware"
HARNESS = {"pgbouncer": {"pool_mode": "transaction", "direct": "default"}}
# These aliases are also words of our metric names (scaleops_replica_*, scaleops_pgbouncer_*,
# scaleops_partition_default_rows): the docs check below covers them instead.
ALIASES_THAT_ARE_WORDS = {"default", "replica", "pgbouncer"}
SELECTS = 23
READS = 7
BULK_ROWS = 1500

pytestmark = pytest.mark.django_db(transaction=True, databases=list(settings.DATABASES))


@dataclass
class Filled:
    """Two scrapes around known traffic, and what the services said meanwhile."""

    before: str
    after: str
    tier: str
    prefix: str
    apm_metric: str
    allowed: int
    limited: int
    database: str
    facts: dict[str, Any] = field(default_factory=dict)


def scrape(client: Client) -> str:
    response = client.get("/ops/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return response.content.decode()


def samples(text: str) -> list[Sample]:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(text: str, name: str, **labels: str) -> float:
    """The one sample ``name`` whose labels include ``labels``."""
    found = [s.value for s in samples(text) if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return found[0]


def admin_rows(sql: str) -> list[dict[str, Any]]:
    """Ask PgBouncer's admin console directly (not through our console reader)."""
    with psycopg.connect(pooled_alias("pgbouncer").resolved_admin_url(), autocommit=True) as conn:
        cursor = conn.execute(sql)
        names = [column.name for column in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def partitions_in_catalog(table: str) -> int:
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = to_regclass(%s) AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'",
            [table],
        )
        return int(cursor.fetchone()[0])


@pytest.fixture
def filled(client: Client) -> Iterator[Filled]:
    """Every metrics source with real figures, and a scrape before and after known traffic."""
    prefix = f"test-prom-{uuid.uuid4().hex[:8]}"
    clear_metrics_cache()
    with (
        override_settings(
            ROOT_URLCONF="tests.monitoringapp.urls",
            SCALEOPS_MONITOR_ENABLED=True,
            SCALEOPS_MONITOR_REDIS_PREFIX=prefix,
            SCALEOPS_MONITOR_TOKEN=TOKEN,
            SCALEOPS_PGBOUNCER_ALIASES=HARNESS,
        ),
        router_settings(),
        fresh_routing(),
    ):
        monitor.reset()
        try:
            yield fill(client)
        finally:
            aggregate.clear(aggregate.redis_client(), prefix)
            monitor.reset()
            clear_metrics_cache()


def fill(client: Client) -> Filled:
    tag = uuid.uuid4().hex[:8]
    # Rate limiting: a bucket of 2 for a tier of our own, asked 5 times.
    tier = f"tier_{tag}"
    policy = Policy(name=tier, limit=2, period=60)
    decisions = [limiter.check(f"prom-test-{tag}", policy) for _ in range(5)]
    allowed = sum(d.allowed for d in decisions)
    # A broken tier row: answered by its failure mode without Redis (a degraded decision).
    limiter.check(f"prom-test-{tag}", Policy(name=tier, limit=2, period=60, invalid="test"))

    # Cache: one miss then two hits for a function of our own (its name is the stats prefix).
    calls: list[int] = []

    def square(n: int) -> int:
        calls.append(n)
        return n * n

    square.__name__ = square.__qualname__ = f"square_{tag}"
    cached = cached_function(timeout=60)(square)
    assert [cached(3), cached(3), cached(3)] == [9, 9, 9] and calls == [3]

    apm_metric = f"prom.test.{tag}"
    for figure in (2.0, 3.0, 5.0):
        record_metric(apm_metric, figure)

    with use_primary():
        note = Note.objects.using("default").create(body="for the replica")
        Item.objects.batch_create(
            ((f"prom-{tag}-{n}", f"item {n}", n) for n in range(BULK_ROWS)),
            fields=["sku", "name", "quantity"],
            batch_size=1000,
        )
    wait_for_replay()
    reset_routing_state()

    connections["pgbouncer"].close()  # one left from the database setup may have been dropped by the pooler
    with connections["pgbouncer"].cursor() as cursor:
        cursor.execute("SELECT 1")

    before = scrape(client)
    with connections["default"].cursor() as cursor:
        for _ in range(SELECTS):
            cursor.execute("SELECT 1")
    with assert_reads_from("replica", at_least=READS):
        for _ in range(READS):
            assert Note.objects.filter(pk=note.pk).exists()
    with override_settings(MIDDLEWARE=[THROTTLE_MIDDLEWARE, *settings.MIDDLEWARE]):
        refused = Client().get("/styles/sync", HTTP_AUTHORIZATION=f"Api-Key sops_{tag}_not-a-key")
    guard.forget("127.0.0.1")
    assert refused.status_code == 401
    # The replica's lag comes from its last health check, which reads start in the background:
    # check now, so the page has a lag to publish (it lacked one once under load).
    checked = replica_status(refresh=True)["replicas"]["replica"]
    assert checked["lag_bytes"] is not None and checked["lag_seconds"] is not None, checked
    after = scrape(client)

    database = str(connections["default"].settings_dict["NAME"])
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM bulkapp_item WHERE sku LIKE %s", [f"prom-{tag}-%"])
        bulk_rows = int(cursor.fetchone()[0])
    return Filled(
        before=before,
        after=after,
        tier=tier,
        prefix=_cache_prefix(f"square_{tag}"),
        apm_metric=apm_metric,
        allowed=allowed,
        limited=len(decisions) - allowed,
        database=database,
        facts={"bulk_rows": bulk_rows},
    )


def _cache_prefix(function_name: str) -> str:
    """The stats prefix Redis holds for the function (found in Redis, not assumed)."""
    members: set[bytes] = get_redis_connection("default").smembers(gate.key("stats:prefixes"))
    found = [m.decode() for m in members if function_name in m.decode()]
    assert len(found) == 1, found
    return found[0]


def test_promtool_accepts_the_page(filled: Filled, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    # Not a skip: a suite that passes without promtool would not have checked the page at all.
    assert promtool is not None, "promtool is missing; install it with: apt-get install prometheus"
    page = tmp_path / "metrics.txt"
    page.write_text(filled.after)
    with page.open("rb") as stdin:
        checked = subprocess.run(
            [promtool, "check", "metrics"], stdin=stdin, capture_output=True, text=True, timeout=60
        )
    complaints = [line for line in (checked.stdout + checked.stderr).splitlines() if line.strip()]
    assert complaints == [] and checked.returncode == 0, "\n".join(complaints)


def test_the_page_tells_what_the_services_say(filled: Filled) -> None:
    before, after = filled.before, filled.after

    # Queries: the counter moved by exactly the statements run, and the histogram agrees.
    moved = value(after, "scaleops_queries_total", alias="default") - value(
        before, "scaleops_queries_total", alias="default"
    )
    assert moved == SELECTS
    count = value(after, "scaleops_query_duration_seconds_count", alias="default")
    assert count == value(after, "scaleops_queries_total", alias="default")
    assert value(after, "scaleops_query_duration_seconds_bucket", alias="default", le="+Inf") == count
    assert value(after, "scaleops_query_figures_scope", scope="fleet") == 1
    assert not any("quantile" in s.labels for s in samples(after))

    # Partitions: per model, what pg_inherits says.
    for config in partitioned_models():
        assert value(after, "scaleops_partitions", model=config.label) == partitions_in_catalog(config.table)

    # PgBouncer: up, and the pool size its console reports for our database.
    assert value(after, "scaleops_pgbouncer_up", alias="pgbouncer") == 1
    sizes = {row["name"]: row["pool_size"] for row in admin_rows("SHOW DATABASES")}
    pool_size = value(after, "scaleops_pgbouncer_pool_size", alias="pgbouncer", database=filled.database)
    assert pool_size == sizes[filled.database]
    stats = {row["database"]: row for row in admin_rows("SHOW STATS")}
    queries = value(after, "scaleops_pgbouncer_queries_total", alias="pgbouncer", database=filled.database)
    assert 0 < queries <= stats[filled.database]["total_query_count"]
    # Seconds on the page, microseconds in the console (read later, so it may have grown).
    spent = value(after, "scaleops_pgbouncer_query_seconds_total", alias="pgbouncer", database=filled.database)
    assert 0 < spent <= float(stats[filled.database]["total_query_time"]) / 1e6

    # Replicas: healthy, and the reads routed to it counted one by one.
    assert value(after, "scaleops_replica_state", alias="replica", state="healthy") == 1
    assert value(after, "scaleops_replica_state", alias="replica", state="down") == 0
    reads = value(after, "scaleops_router_reads_total", alias="replica", route="replica")
    assert reads - value(before, "scaleops_router_reads_total", alias="replica", route="replica") == READS
    assert value(after, "scaleops_replica_lag_bytes", alias="replica") >= 0

    # Rate limiting: the limiter's answers, per tier.
    assert (filled.allowed, filled.limited) == (2, 3)
    assert value(after, "scaleops_ratelimit_decisions_total", tier=filled.tier, decision="allowed") == 2
    assert value(after, "scaleops_ratelimit_decisions_total", tier=filled.tier, decision="limited") == 3
    assert value(after, "scaleops_ratelimit_degraded_decisions_total", tier=filled.tier) == 1
    assert value(after, "scaleops_ratelimit_invalid_tier_decisions_total", tier=filled.tier) == 1
    refusals = [s for s in samples(after) if s.name == "scaleops_ratelimit_rejected_keys_total"]
    earlier = [s for s in samples(before) if s.name == "scaleops_ratelimit_rejected_keys_total"]
    assert sum(s.value for s in refusals) - sum(s.value for s in earlier) == 1

    # Cache: what the fleet's hash in Redis holds for the prefix (one miss, two hits).
    held = {
        k.decode(): float(v)
        for k, v in get_redis_connection("default").hgetall(gate.key(f"stats:{filled.prefix}")).items()
    }
    hits = value(after, "scaleops_cache_lookups_total", prefix=filled.prefix, result="hit")
    l1_hits = value(after, "scaleops_cache_lookups_total", prefix=filled.prefix, result="l1_hit")
    assert (hits, l1_hits) == (held.get("hits", 0.0), held.get("l1_hits", 0.0))
    assert hits + l1_hits == 2
    assert value(after, "scaleops_cache_lookups_total", prefix=filled.prefix, result="miss") == held["misses"] == 1
    assert value(after, "scaleops_cache_figures_fleet") == 1

    # APM figures: count and sum of what was recorded.
    assert value(after, "scaleops_apm_metric_count", metric=filled.apm_metric) == 3
    assert value(after, "scaleops_apm_metric_sum", metric=filled.apm_metric) == 10.0

    # Bulk: the rows the table holds now, counted by the create operation.
    rows = value(after, "scaleops_bulk_rows_total", operation="create")
    assert filled.facts["bulk_rows"] == BULK_ROWS and rows >= BULK_ROWS

    for source in ("apm", "bulk", "cache", "partitions", "pgbouncer", "ratelimit", "replicas"):
        assert value(after, "scaleops_metrics_source_up", source=source) == 1


def test_no_dimension_in_a_metric_name(filled: Filled) -> None:
    names = {s.name for s in samples(filled.after)}
    dimensions = {filled.tier, filled.prefix, filled.apm_metric, filled.database}
    for config in partitioned_models():
        dimensions |= {config.label, config.label.replace(".", "_"), config.label.split(".")[-1], config.table}
    for alias, params in settings.DATABASES.items():
        dimensions.add(str(params["NAME"]))
        if alias not in ALIASES_THAT_ARE_WORDS:
            dimensions.add(alias)
    offending = sorted((name, dimension) for name in names for dimension in dimensions if _name_part(dimension) in name)
    assert offending == []
    # Every family is one of the documented ones: a name built from data would not be.
    documented = set(re.findall(r"^\| `(scaleops_[a-z0-9_]+)`", DOCS.read_text(), flags=re.MULTILINE))
    families = {family.name for family in text_string_to_metric_families(filled.after)}
    assert families - {_family(name) for name in documented} == set()


def _name_part(dimension: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", dimension)


def _family(name: str) -> str:
    """The parser's family name of a documented name (counters lose ``_total``)."""
    return name.removesuffix("_total")


def test_a_source_without_translation_and_a_broken_one_still_give_a_valid_page(client: Client) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("nothing to see")

    metrics.register_source("test_plain", lambda: {"hits": 7, "by model": {"chat.Message": 2}, "up": True})
    metrics.register_source("test_broken", broken)
    metrics.register_source("test_bad_translation", lambda: {"x": 1}, families=lambda figures: [1 / 0])  # type: ignore[list-item]
    try:
        with override_settings(
            ROOT_URLCONF="tests.monitoringapp.urls", SCALEOPS_MONITOR_ENABLED=True, SCALEOPS_MONITOR_TOKEN=TOKEN
        ):
            page = scrape(client)
    finally:
        for name in ("test_plain", "test_broken", "test_bad_translation"):
            metrics.unregister_source(name)
    assert value(page, "scaleops_source_value", source="test_plain", figure="hits") == 7
    assert value(page, "scaleops_source_value", source="test_plain", figure="by model.chat.Message") == 2
    assert value(page, "scaleops_source_value", source="test_plain", figure="up") == 1
    assert value(page, "scaleops_metrics_source_up", source="test_broken") == 0
    assert value(page, "scaleops_metrics_source_up", source="test_bad_translation") == 0
    assert "nothing to see" not in page


# ---- the Grafana dashboard


def promql_expressions(dashboard: dict[str, Any]) -> list[str]:
    expressions: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                expressions.append(node["expr"])
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(dashboard)
    return expressions


METRIC = re.compile(r"\b(scaleops_[a-zA-Z0-9_]+)\s*(\{[^}]*\})?")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def test_grafana_dashboard_queries_only_what_the_page_has(filled: Filled) -> None:
    dashboard = json.loads(GRAFANA.read_text())
    assert any(i.get("name") == "DS_PROMETHEUS" for i in dashboard.get("__inputs", []))
    page = samples(filled.after)
    labels_of: dict[str, set[str]] = {}
    for sample in page:
        labels_of.setdefault(sample.name, set()).update(sample.labels)
    expressions = promql_expressions(dashboard)
    assert len(expressions) >= 8
    problems: list[str] = []
    for expr in expressions:
        used = METRIC.findall(expr)
        if not used:
            problems.append(f"no scaleops metric in {expr!r}")
        names = {name for name, _ in used}
        known = set().union(*(labels_of.get(name, set()) for name in names)) | {"le"}
        for name, matchers in used:
            if name not in labels_of:
                problems.append(f"{name} (in {expr!r}) is not on the page")
            for label in MATCHER.findall(matchers or ""):
                if label not in labels_of.get(name, set()):
                    problems.append(f"{name} has no label {label} (in {expr!r})")
        for group in GROUPING.findall(expr):
            for label in filter(None, (part.strip() for part in group.split(","))):
                if label not in known:
                    problems.append(f"no label {label} on {sorted(names)} (in {expr!r})")
    assert problems == [], "\n".join(problems)
    for panel in dashboard["panels"]:
        if panel.get("type") != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
