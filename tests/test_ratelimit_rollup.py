"""The usage rollup: counters leave Redis only after their rows commit, and runs never overlap.

Real PostgreSQL and Redis of the launcher; concurrency with real threads and forked processes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from io import StringIO
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, connections
from django.db.models import Sum

from django_scaleops.models import ApiKey, ApiKeyUsage
from django_scaleops.ratelimit import rollup_usage
from django_scaleops.ratelimit.analytics import RollupLockLost, RollupResult
from django_scaleops.ratelimit.redis_keys import key_identity, redis_connection, usage_key
from tests.test_ratelimit import clean_state, make_key, seeded_tier  # noqa: F401

USAGE_TABLE = ApiKeyUsage._meta.db_table
LOCK_KEY = "scaleops:rl:rollup:lock"


@pytest.fixture(autouse=True)
def no_stale_state() -> Iterator[None]:
    redis_connection().delete(LOCK_KEY)
    yield
    redis_connection().delete(LOCK_KEY)


def past_minute(minutes_ago: int) -> int:
    return int(datetime.now(tz=UTC).timestamp() // 60) - minutes_ago


def seed_usage(keys: int, minutes: int = 3) -> tuple[list[int], int]:
    """``keys`` keys with random counts in completed minutes, as the limiter's script leaves them."""
    tier = seeded_tier("Standard")
    ids = [ApiKey.create_key(name=f"usage {i}", tier=tier)[0].pk for i in range(keys)]
    client = redis_connection()
    pipe = client.pipeline(transaction=False)
    total = 0
    for key_id in ids:
        for ago in range(1, minutes + 1):
            allowed, limited = random.randint(1, 500), random.randint(0, 50)
            pipe.hincrby(usage_key(key_identity(key_id)), f"{past_minute(ago)}:a", allowed)
            if limited:
                pipe.hincrby(usage_key(key_identity(key_id)), f"{past_minute(ago)}:l", limited)
            total += allowed + limited
    pipe.execute()
    return ids, total


def in_redis(ids: list[int]) -> int:
    client = redis_connection()
    return sum(int(v) for key_id in ids for v in client.hgetall(usage_key(key_identity(key_id))).values())


def in_database(ids: list[int]) -> int:
    sums = ApiKeyUsage.objects.filter(api_key_id__in=ids).aggregate(a=Sum("allowed"), l=Sum("limited"))
    return int(sums["a"] or 0) + int(sums["l"] or 0)


@contextlib.contextmanager
def locked_usage_table() -> Iterator[psycopg.Connection[Any]]:
    """Another session holding the usage table: a rollup blocks on its first row until released."""
    dsn = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/" + connection.settings_dict["NAME"]
    locker = psycopg.connect(dsn)
    try:
        locker.execute("BEGIN")
        locker.execute(f"LOCK TABLE {USAGE_TABLE} IN ACCESS EXCLUSIVE MODE")
        yield locker
    finally:
        locker.rollback()
        locker.close()


def wait_until_blocked(locker: psycopg.Connection[Any], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = locker.execute(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass", [USAGE_TABLE]
        ).fetchone()
        if row and row[0] > 0:
            return
        time.sleep(0.02)
    raise AssertionError("the rollup never reached the usage table")


class Run(threading.Thread):
    """One rollup in a thread of its own (its own database connection), keeping result or error."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._target_fn = target
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._target_fn()
        except BaseException as exc:  # handed to the test
            self.error = exc
        finally:
            connections.close_all()


# ---- at-least-once: removal only after the commit


@pytest.mark.django_db(transaction=True)
def test_counters_stay_in_redis_when_the_commit_fails():
    ids, total = seed_usage(3)
    with connection.cursor() as cursor:
        # A deferred constraint trigger: every write succeeds, the COMMIT itself fails.
        cursor.execute(
            "CREATE FUNCTION scaleops_refuse_commit() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'commit refused by the test'; END $$"
        )
        cursor.execute(
            f"CREATE CONSTRAINT TRIGGER scaleops_refuse_commit AFTER INSERT ON {USAGE_TABLE} "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION scaleops_refuse_commit()"
        )
    try:
        with pytest.raises(DatabaseError, match="commit refused"):
            rollup_usage()
        assert in_database(ids) == 0
        assert in_redis(ids) == total  # nothing was taken out of Redis for the failed commit
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER scaleops_refuse_commit ON {USAGE_TABLE}")
            cursor.execute("DROP FUNCTION scaleops_refuse_commit()")
    result = rollup_usage()
    assert result.requests == total
    assert in_database(ids) == total
    assert in_redis(ids) == 0


@pytest.mark.django_db(transaction=True)
def test_counters_leave_redis_only_once_their_rows_are_committed():
    ids, total = seed_usage(2)
    with locked_usage_table() as locker:
        run = Run(rollup_usage)
        run.start()
        wait_until_blocked(locker)
        assert in_redis(ids) == total  # read, written in part, not committed: still all in Redis
    run.join(30)
    assert run.error is None
    assert run.result.requests == total
    assert in_database(ids) == total
    assert in_redis(ids) == 0


@pytest.mark.django_db(transaction=True)
def test_counts_added_during_a_run_stay_for_the_next():
    """The run takes away what it rolled up, not the field: a count that grew meanwhile keeps the rest."""
    ids, total = seed_usage(1, minutes=1)
    field = f"{past_minute(1)}:a"
    with locked_usage_table() as locker:
        run = Run(rollup_usage)
        run.start()
        wait_until_blocked(locker)
        redis_connection().hincrby(usage_key(key_identity(ids[0])), field, 7)
    run.join(30)
    assert run.error is None
    assert in_redis(ids) == 7
    rollup_usage()
    assert in_database(ids) == total + 7
    assert in_redis(ids) == 0


# ---- overlapping runs


@pytest.mark.django_db(transaction=True)
def test_a_run_started_while_another_is_at_work_skips():
    ids, total = seed_usage(3)
    with locked_usage_table() as locker:
        first = Run(rollup_usage)
        first.start()
        wait_until_blocked(locker)
        overlapping = [Run(rollup_usage) for _ in range(4)]
        for run in overlapping:
            run.start()
        for run in overlapping:
            run.join(30)
        out = StringIO()
        call_command("rollup_rate_limit_usage", stdout=out)
    first.join(30)
    assert first.error is None and first.result.requests == total
    assert [(r.error, r.result) for r in overlapping] == [(None, RollupResult(0, 0, 0, skipped=True))] * 4
    assert "Skipped: another rollup_rate_limit_usage run holds the lock." in out.getvalue()
    assert in_database(ids) == total
    assert in_redis(ids) == 0


def _command_runs(start_at: float, runs: int, results: Any) -> None:
    connections.close_all()  # the parent's sockets are not ours
    while time.time() < start_at:
        time.sleep(0.001)
    rolled, skipped = 0, 0
    for _ in range(runs):
        out = StringIO()
        call_command("rollup_rate_limit_usage", stdout=out)
        text = out.getvalue()
        if "Skipped" in text:
            skipped += 1
        else:
            rolled += int(text.split()[2])  # "Rolled up N requests in ..."
    connections.close_all()
    results.put((rolled, skipped))


@pytest.mark.django_db(transaction=True)
def test_concurrent_command_processes_never_double_count():
    ids, total = seed_usage(60)
    connections.close_all()  # no connection crosses the fork
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start_at = time.time() + 0.5
    processes = [context.Process(target=_command_runs, args=(start_at, 3, results)) for _ in range(4)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert sum(rolled for rolled, _ in outcomes) == total
    assert in_database(ids) == total
    assert in_redis(ids) == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_threads_never_double_count():
    ids, total = seed_usage(40)
    runs = [Run(rollup_usage) for _ in range(6)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(60)
    assert [run.error for run in runs] == [None] * 6
    assert sum(run.result.requests for run in runs) == total
    assert in_database(ids) == total
    assert in_redis(ids) == 0


# ---- the lock's life


@pytest.mark.django_db(transaction=True)
def test_a_lock_left_by_a_dead_run_expires(settings):
    settings.SCALEOPS_THROTTLE_ROLLUP_LOCK_TTL = 1
    ids, total = seed_usage(1)
    redis_connection().set(LOCK_KEY, "a run that died", px=1000)
    assert rollup_usage().skipped
    time.sleep(1.1)
    assert rollup_usage().requests == total
    assert in_redis(ids) == 0


@pytest.mark.django_db(transaction=True)
def test_a_run_is_renewing_its_lock_while_it_works(settings):
    settings.SCALEOPS_THROTTLE_ROLLUP_LOCK_TTL = 1
    ids, total = seed_usage(1)
    with locked_usage_table() as locker:
        run = Run(rollup_usage)
        run.start()
        wait_until_blocked(locker)
        time.sleep(2.5)  # over twice the TTL: renewed every third of it
        assert rollup_usage().skipped
    run.join(30)
    assert run.error is None and run.result.requests == total
    assert in_database(ids) == total


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("through", ["function", "command"])
def test_a_run_that_lost_its_lock_rolls_back_and_leaves_the_counters(through):
    ids, total = seed_usage(2)

    def command() -> None:
        call_command("rollup_rate_limit_usage", stdout=StringIO())

    with locked_usage_table() as locker:
        run = Run(rollup_usage if through == "function" else command)
        run.start()
        wait_until_blocked(locker)
        redis_connection().delete(LOCK_KEY)  # expired, or taken over by force
    run.join(30)
    expected = RollupLockLost if through == "function" else CommandError
    assert isinstance(run.error, expected)
    assert "lost its lock" in str(run.error)
    assert in_database(ids) == 0
    assert in_redis(ids) == total
    assert rollup_usage().requests == total
    assert in_database(ids) == total


@pytest.mark.django_db
def test_dry_run_takes_no_lock_and_changes_nothing():
    api_key, _ = make_key("Free")
    redis_connection().hincrby(usage_key(key_identity(api_key.pk)), f"{past_minute(2)}:a", 5)
    redis_connection().set(LOCK_KEY, "another run", px=60_000)
    result = rollup_usage(dry_run=True)
    assert (result.requests, result.skipped) == (5, False)
    assert not ApiKeyUsage.objects.exists()
    assert in_redis([api_key.pk]) == 5


@pytest.mark.django_db
def test_last_used_at_never_moves_back():
    api_key, _ = make_key("Free")
    client = redis_connection()
    client.hincrby(usage_key(key_identity(api_key.pk)), f"{past_minute(1)}:a", 1)
    rollup_usage()
    api_key.refresh_from_db()
    newest = api_key.last_used_at
    assert newest is not None
    client.hincrby(usage_key(key_identity(api_key.pk)), f"{past_minute(5)}:a", 1)  # a late, older minute
    rollup_usage()
    api_key.refresh_from_db()
    assert api_key.last_used_at == newest
