"""The cache when Redis fails, and the L1 tier across two processes (real Redis, real PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import transaction
from django.test.utils import override_settings

from django_scaleops.cache import broadcast_invalidate, l1, stats, with_cache
from django_scaleops.cache.invalidation import invalidate
from tests.cacheapp.helpers import clean_cache  # noqa: F401
from tests.cacheapp.models import Author, Book

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_cache"), pytest.mark.services]

ROOT = Path(__file__).resolve().parent.parent


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@override_settings(SCALEOPS_CACHE_BREAKER_COOLDOWN=0.2)
def test_redis_down_reads_the_database_then_recovers(services, caplog, django_assert_num_queries):
    author = Author.objects.create(name="Ada")
    Book.objects.create(title="A1", author=author, pages=10)

    def pages() -> list[int]:
        return list(Book.objects.order_by("title").cached_values_list("pages", flat=True, timeout=60))

    assert pages() == [10]
    services.redis.stop()
    try:
        assert pages() == [10]
        Book.objects.update(pages=20)  # its invalidation cannot reach Redis: owed
        assert pages() == [20]
        with django_assert_num_queries(1):  # no wait on a dead Redis: straight to the database
            assert pages() == [20]
        figures = stats.snapshot()
        assert figures["redis_available"] is False
        assert figures["outages"] == 1
        assert figures["totals"]["redis_errors"] >= 1
        assert any("Redis cache unreachable" in r.getMessage() for r in caplog.records)
    finally:
        services.redis.start()
    time.sleep(0.3)  # past the retry pause
    assert pages() == [20]
    with django_assert_num_queries(0):
        assert pages() == [20]
    assert stats.snapshot()["redis_available"] is True
    Book.objects.update(pages=30)
    assert pages() == [30]


def test_l1_stays_consistent_across_two_processes(tmp_path):
    source = tmp_path / "value"
    source.write_text("one")
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "cacheapp" / "l1_worker.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "L1_SOURCE": str(source)},
    )

    def ask(command: str) -> str:
        assert worker.stdin and worker.stdout
        worker.stdin.write(command + "\n")
        worker.stdin.flush()
        return worker.stdout.readline().strip()

    try:
        assert wait_until(lambda: ask("live") == "True")
        assert ask("get") == "one"  # miss: read, stored in Redis and in the worker's L1
        source.write_text("two")
        assert ask("get") == "one"
        assert int(ask("stats")) == 1  # served by L1, no Redis round trip
        with override_settings(SCALEOPS_CACHE_L1_TIMEOUT=60):
            # This process shares the Redis value and keeps it in its own L1 too.
            def read() -> str:
                return str(with_cache("l1-test:value", source.read_text, 60, depends_on=["cacheapp_book"]))

            assert wait_until(l1.usable)
            assert read() == "one"
            assert len(l1.tier) == 1
            invalidate(Book)  # commits nothing here: autocommit, so the bump and broadcast are immediate
            assert len(l1.tier) == 0
            assert read() == "two"
        assert wait_until(lambda: ask("get") == "two", timeout=5)
        source.write_text("three")
        with override_settings(SCALEOPS_CACHE_L1_TIMEOUT=60), transaction.atomic():
            broadcast_invalidate("cacheapp_book")  # at once, not at commit
            assert wait_until(lambda: ask("get") == "three", timeout=5)
    finally:
        if worker.stdin:
            worker.stdin.close()
        worker.wait(timeout=10)


def test_invalidations_missed_during_a_partition_are_applied_on_recovery(django_assert_num_queries):
    """Redis keeps its data but this process cannot reach it while a write commits."""
    from django.conf import settings

    Author.objects.create(name="Ada")
    names = lambda: Author.objects.order_by("name").cached_values_list("name", flat=True, timeout=60)  # noqa: E731
    assert names() == ["Ada"]
    unreachable = {"default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:9/0"}}
    with override_settings(CACHES=unreachable, SCALEOPS_CACHE_BREAKER_COOLDOWN=0):
        Author.objects.update(name="Bea")  # the stamp bump cannot be delivered: it is owed
        assert names() == ["Bea"]
        assert stats.snapshot()["redis_available"] is False
    with override_settings(SCALEOPS_CACHE_BREAKER_COOLDOWN=0):
        # Redis still holds the "Ada" entry under the old stamp; the owed bump must come first.
        assert names() == ["Bea"]
        with django_assert_num_queries(0):
            assert names() == ["Bea"]
    assert stats.snapshot()["redis_available"] is True


def test_l1_is_flushed_and_off_while_its_channel_is_down(services):
    with override_settings(SCALEOPS_CACHE_L1_TIMEOUT=60, SCALEOPS_CACHE_BREAKER_COOLDOWN=0.2):
        assert wait_until(l1.usable)
        assert with_cache("l1-down:k", lambda: "v1", 60) == "v1"
        assert with_cache("l1-down:k", lambda: "v1", 60) == "v1"
        assert len(l1.tier) == 1
        services.redis.stop()
        try:
            assert wait_until(lambda: not l1.tier.live)
            assert len(l1.tier) == 0
            assert with_cache("l1-down:k", lambda: "from the database", 60) == "from the database"
            assert len(l1.tier) == 0  # nothing is kept while invalidations cannot be heard
        finally:
            services.redis.start()
        assert wait_until(l1.usable)
        # Recovery is noticed on a later call (BREAKER_COOLDOWN): wait until a value is stored again.
        assert wait_until(
            lambda: (
                with_cache("l1-down:k", lambda: "v2", 60) == "v2" and with_cache("l1-down:k", lambda: "x", 60) == "v2"
            )
        )
        assert with_cache("l1-down:k", lambda: "v3", 60) == "v2"
        assert len(l1.tier) == 1
