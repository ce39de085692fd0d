"""Cache-aside querysets and functions against real Redis and PostgreSQL."""

from __future__ import annotations

import threading
import time
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections, transaction
from django.db.models.expressions import RawSQL
from django.test.utils import override_settings
from django_redis import get_redis_connection
from psycopg import IsolationLevel

from django_scaleops import metrics
from django_scaleops.cache import (
    cached_function,
    core,
    declare_dependency,
    invalidate,
    invalidate_key,
    refreshing,
    register_freshness_hook,
    stats,
    unregister_freshness_hook,
    warmer,
    with_cache,
)
from django_scaleops.cache.checks import check_cache
from django_scaleops.cache.invalidation import _declared, wrote_in_transaction
from django_scaleops.cache.keys import written_tables
from django_scaleops.cache.warmers import unregister_warmer
from django_scaleops.checks import check_settings
from django_scaleops.signals import bulk_rows_written
from tests.cacheapp.helpers import clean_cache, install_probe, probe_calls, stamp  # noqa: F401
from tests.cacheapp.models import Author, Book, Probe

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_cache")]


@pytest.fixture
def books() -> list[Book]:
    ada = Author.objects.create(name="Ada")
    bob = Author.objects.create(name="Bob")
    return [
        Book.objects.create(title="A1", author=ada, pages=10),
        Book.objects.create(title="A2", author=ada, pages=20),
        Book.objects.create(title="B1", author=bob, pages=30),
    ]


def titles(rows: list[Book]) -> list[str]:
    return [b.title for b in rows]


def test_second_read_is_served_from_redis(books, django_assert_num_queries):
    first = Book.objects.filter(pages__gte=15).order_by("title").cached(timeout=60)
    with django_assert_num_queries(0):
        second = Book.objects.filter(pages__gte=15).order_by("title").cached(timeout=60)
    assert titles(first) == titles(second) == ["A2", "B1"]
    # Other parameters are another entry.
    assert titles(Book.objects.filter(pages__gte=25).order_by("title").cached(timeout=60)) == ["B1"]
    figures = stats.snapshot()["prefixes"]["cacheapp.book"]
    assert (figures["hits"], figures["misses"], figures["fetches"]) == (1, 2, 2)


def test_variants_get_count_exists_values(books, django_assert_num_queries):
    for _ in range(2):
        got = Book.objects.cached_get(title="A1", timeout=60)
        count = Book.objects.filter(author__name="Ada").cached_count(timeout=60)
        exists = Book.objects.filter(pages=999).cached_exists(timeout=60)
        values = Book.objects.order_by("pages").cached_values("title", timeout=60)
        flat = Book.objects.order_by("pages").cached_values_list("pages", flat=True, timeout=60)
    assert (got.title, count, exists) == ("A1", 2, False)
    assert values == [{"title": "A1"}, {"title": "A2"}, {"title": "B1"}]
    assert flat == [10, 20, 30]
    with django_assert_num_queries(0):
        assert Book.objects.filter(author__name="Ada").cached_count(timeout=60) == 2
    with pytest.raises(Book.DoesNotExist):
        Book.objects.cached_get(title="nope", timeout=60)
    with pytest.raises(Book.DoesNotExist):  # a miss is not cached: it is asked again
        Book.objects.cached_get(title="nope", timeout=60)
    with pytest.raises(ValueError, match="positive"):
        Book.objects.cached(timeout=0)


def test_save_update_delete_and_raw_sql_invalidate(books):
    def pages_of_a1() -> int:
        return Book.objects.cached_get(title="A1", timeout=60).pages

    assert pages_of_a1() == 10
    book = Book.objects.get(title="A1")
    book.pages = 11
    book.save()
    assert pages_of_a1() == 11
    Book.objects.filter(title="A1").update(pages=12)
    assert pages_of_a1() == 12
    with connection.cursor() as cursor:
        cursor.execute("UPDATE cacheapp_book SET pages = 13 WHERE title = %s", ["A1"])
    assert pages_of_a1() == 13
    assert Book.objects.order_by("title").cached_count(timeout=60) == 3
    Book.objects.filter(title="A1").delete()
    assert Book.objects.order_by("title").cached_count(timeout=60) == 2
    Book.objects.bulk_create([Book(title="C1", author=books[0].author), Book(title="C2", author=books[0].author)])
    assert Book.objects.order_by("title").cached_count(timeout=60) == 4


def test_write_to_a_joined_table_invalidates(books):
    assert titles(Book.objects.filter(author__name="Ada").order_by("title").cached(timeout=60)) == ["A1", "A2"]
    Author.objects.filter(name="Ada").update(name="Adele")
    assert Book.objects.filter(author__name="Ada").cached(timeout=60) == []
    # A subquery's table counts too.
    subquery = Book.objects.filter(author__in=Author.objects.filter(name="Bob"))
    assert titles(subquery.cached(timeout=60)) == ["B1"]
    Author.objects.filter(name="Bob").update(name="Robert")
    assert subquery.cached(timeout=60) == []


def test_rolled_back_write_invalidates_nothing(books, django_assert_num_queries):
    Book.objects.order_by("title").cached(timeout=60)
    before = stamp("cacheapp_book")
    assert before is not None
    with transaction.atomic():
        Book.objects.filter(title="A1").update(pages=99)
        transaction.set_rollback(True)
    assert stamp("cacheapp_book") == before
    with django_assert_num_queries(0):
        assert [b.pages for b in Book.objects.order_by("title").cached(timeout=60)] == [10, 20, 30]


def test_savepoint_rollback_drops_only_its_invalidations(books):
    Book.objects.order_by("title").cached(timeout=60)
    Author.objects.order_by("name").cached(timeout=60)
    book_stamp, author_stamp = stamp("cacheapp_book"), stamp("cacheapp_author")
    with transaction.atomic():
        Book.objects.filter(title="A1").update(pages=50)
        try:
            with transaction.atomic():
                Author.objects.filter(name="Ada").update(name="Zed")
                raise RuntimeError("inner")
        except RuntimeError:
            pass
        assert stamp("cacheapp_book") == book_stamp  # nothing before the commit
    assert stamp("cacheapp_book") != book_stamp
    assert stamp("cacheapp_author") == author_stamp
    assert [b.pages for b in Book.objects.order_by("title").cached(timeout=60)] == [50, 20, 30]


def test_reads_inside_a_writing_transaction_bypass_the_cache(books, django_assert_num_queries):
    Book.objects.order_by("pages").cached_values_list("pages", flat=True, timeout=60)
    with transaction.atomic():
        Book.objects.filter(title="A1").update(pages=1)
        with django_assert_num_queries(1):
            inside = Book.objects.order_by("pages").cached_values_list("pages", flat=True, timeout=60)
        assert inside == [1, 20, 30]
    assert Book.objects.order_by("pages").cached_values_list("pages", flat=True, timeout=60) == [1, 20, 30]
    assert stats.snapshot()["totals"]["bypassed"] == 1


def test_bulk_rows_written_signal_invalidates(books):
    Book.objects.cached_count(timeout=60)
    before = stamp("cacheapp_book")
    bulk_rows_written.send(sender=Book, using="default", operation="update", pks=[books[0].pk])
    assert stamp("cacheapp_book") != before


def test_cascade_along_declared_dependencies(books, django_assert_num_queries):
    summary = Author.objects.order_by("name").cached(timeout=60)
    assert len(summary) == 2
    author_stamp = stamp("cacheapp_author")
    declare_dependency(Book, Author)
    try:
        Book.objects.create(title="A3", author=books[0].author)
    finally:
        _declared.clear()
    assert stamp("cacheapp_author") != author_stamp
    with override_settings(SCALEOPS_CACHE_DEPENDENCIES={"cacheapp.Book": ["cacheapp.Author"]}):
        author_stamp = stamp("cacheapp_author")
        invalidate(Book)
        assert stamp("cacheapp_author") != author_stamp


def test_cached_function_and_with_cache():
    calls: list[int] = []

    @cached_function(timeout=60, depends_on=[Book])
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    assert [square(3), square(3), square(4)] == [9, 9, 16]
    assert calls == [3, 4]
    square.invalidate(3)
    assert square(3) == 9 and square(4) == 16
    assert calls == [3, 4, 3]
    square.invalidate()
    assert square(4) == 16
    assert calls == [3, 4, 3, 4]
    invalidate(Book)  # a declared dependency
    assert square(4) == 16
    assert calls == [3, 4, 3, 4, 4]

    @cached_function(timeout=60, key=lambda user, **_: f"user:{user}")
    def profile(user: int, verbose: bool = False) -> str:
        calls.append(-user)
        return f"profile {user}"

    assert profile(7) == profile(7, verbose=True) == "profile 7"
    assert calls.count(-7) == 1

    counter = iter(range(100))
    assert with_cache("report:1", lambda: next(counter), 60) == 0
    assert with_cache("report:1", lambda: next(counter), 60) == 0
    invalidate_key("report:1")
    assert with_cache("report:1", lambda: next(counter), 60) == 1
    assert stats.snapshot()["prefixes"]["report"]["hits"] == 1
    with pytest.raises(ValueError, match="non-empty string"):
        with_cache("", lambda: 1, 60)


def test_fetch_errors_release_the_lease_and_are_not_cached():
    attempts: list[int] = []

    def failing() -> int:
        attempts.append(1)
        raise ConnectionResetError("database went away")

    for _ in range(2):
        with pytest.raises(ConnectionResetError):
            with_cache("flaky", failing, 60)
    assert len(attempts) == 2
    assert with_cache("flaky", lambda: 5, 60) == 5  # the lease was released, not left to expire


def test_write_between_fetch_and_set_voids_the_lease(books, django_assert_num_queries):
    """A write committed while the holder fetches must stop it storing what it read."""
    query = Book.objects.filter(title="A1")

    def write_elsewhere(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.lstrip().upper().startswith("SELECT"):

            def update() -> None:
                Book.objects.filter(title="A1").update(pages=77)
                connection.close()

            writer = threading.Thread(target=update)
            writer.start()
            writer.join()
        return result

    with connection.execute_wrapper(write_elsewhere):
        seen = query.cached_values_list("pages", flat=True, timeout=60)
    assert seen == [10]  # what the fetch saw, before the write
    assert stats.snapshot()["totals"]["voided_sets"] == 1
    redis = get_redis_connection("default")
    assert [k for k in redis.keys("*") if b":q:" in k and not k.endswith(b":lease")] == []
    with django_assert_num_queries(1):
        assert query.cached_values_list("pages", flat=True, timeout=60) == [77]


# Generous waits: this tests the lease, not how fast a loaded machine runs 50 threads.
@override_settings(SCALEOPS_CACHE_LEASE_WAIT_MS=20_000, SCALEOPS_CACHE_LEASE_TIMEOUT_MS=30_000)
def test_fifty_concurrent_misses_make_one_database_query():
    install_probe()
    Probe.objects.create(value=1)
    start = probe_calls()
    barrier = threading.Barrier(50)
    results: list[object] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            barrier.wait()
            rows = Probe.objects.annotate(n=RawSQL("cacheapp_probe(0.3)", [])).cached_values("value", "n", timeout=60)
            results.append(rows[0]["value"])
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=read) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [1] * 50
    assert probe_calls() - start == 1
    totals = stats.snapshot()["totals"]
    assert totals["fetches"] == 1
    # The 49 others waited for the one fill, or (a thread started late on a loaded machine, or
    # a second round trip on a cluster) found it stored: never a second fetch.
    assert totals["stampedes_avoided"] + totals["hits"] + totals["l1_hits"] == 49
    assert totals["stampedes_avoided"] >= 1


def test_stale_value_served_while_another_caller_holds_the_lease(monkeypatch):
    with override_settings(SCALEOPS_CACHE_STALE_GRACE=30):
        assert with_cache("stale:k", lambda: "old", 1) == "old"
        redis = get_redis_connection("default")
        (full,) = [k for k in redis.keys("*") if b":k:" in k]
        # Two seconds later: past its one-second timeout, inside the grace. Redis' TTL (the
        # script's PTTL) and the expiry inside the value (a one-MGET hit) both say so.
        redis.pexpire(full, 29_000)
        clock = core.wall_clock
        monkeypatch.setattr(core, "wall_clock", lambda: clock() + 2)
        redis.set(full + b":lease", b"someone-else", px=5000)
        assert with_cache("stale:k", lambda: "new", 1) == "old"
        assert stats.snapshot()["prefixes"]["stale"]["stale_served"] == 1
        redis.delete(full + b":lease")
        assert with_cache("stale:k", lambda: "new", 1) == "new"  # we take the lease and refresh


def test_xfetch_refreshes_early_when_the_fetch_is_costly():
    calls = iter(range(10))

    def costly() -> int:
        time.sleep(0.01)  # with beta 1e9, 10 ms of fetch time makes the early refresh certain
        return next(calls)

    with override_settings(SCALEOPS_CACHE_XFETCH_BETA=1e9):
        assert with_cache("xf:k", costly, 60) == 0
        assert with_cache("xf:k", costly, 60) == 1
    with override_settings(SCALEOPS_CACHE_XFETCH_BETA=0):
        assert with_cache("xf:k", lambda: next(calls), 60) == 1
    assert stats.snapshot()["prefixes"]["xf"]["early_refreshes"] == 1


def test_freshness_hook_bypasses_the_cache(books, django_assert_num_queries):
    asked: list[tuple[frozenset[str], str | None]] = []

    def hook(tables: frozenset[str], using: str | None) -> bool:
        asked.append((tables, using))
        return "cacheapp_book" in tables

    Book.objects.cached_count(timeout=60)
    register_freshness_hook(hook)
    try:
        with django_assert_num_queries(1):
            assert Book.objects.cached_count(timeout=60) == 3
        Author.objects.cached_count(timeout=60)
        with django_assert_num_queries(0):  # other tables are still served from the cache
            assert Author.objects.cached_count(timeout=60) == 2
    finally:
        unregister_freshness_hook(hook)
    assert asked[0] == (frozenset({"cacheapp_book"}), "default")


def test_compression_above_one_kilobyte_through_django_redis():
    caches_setting = {
        "default": {
            **settings.CACHES["default"],
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "COMPRESSOR": "django_scaleops.cache.compressors.ZlibCompressor",
            },
        }
    }
    with override_settings(CACHES=caches_setting):
        big = "x" * 5000
        assert with_cache("zip:big", lambda: big, 60) == big
        assert with_cache("zip:small", lambda: "tiny", 60) == "tiny"
        redis = get_redis_connection("default")
        values = {k: redis.get(k) for k in redis.keys("*") if b":k:" in k}
        sizes = sorted(len(v) for v in values.values())
        assert sizes[-1] < 200  # 5 KB stored compressed
        assert any(v.startswith(b"x\x9c") for v in values.values())
        assert sum(1 for v in values.values() if not v.startswith(b"x\x9c")) == 1  # the small one
        assert with_cache("zip:big", lambda: "wrong", 60) == big


def test_statistics_are_published_as_a_metrics_source():
    with_cache("m:1", lambda: 1, 60)
    with_cache("m:1", lambda: 1, 60)
    figures = metrics.collect()["cache"]
    assert figures["redis_available"] is True
    assert figures["prefixes"]["m"]["hits"] == 1
    assert figures["prefixes"]["m"]["misses"] == 1
    assert figures["totals"]["hit_ratio"] == 0.5


def test_warm_cache_command(books, django_assert_num_queries):
    @warmer("test-books")
    def warm_books() -> None:
        """Every book by title."""
        Book.objects.order_by("title").cached(timeout=60)

    try:
        out = StringIO()
        call_command("warm_cache", "--list", stdout=out)
        assert "test-books  Every book by title." in out.getvalue()
        call_command("warm_cache", "test-books", "--dry-run", stdout=out)
        assert "would run test-books" in out.getvalue()
        assert stats.snapshot()["totals"]["fetches"] == 0
        call_command("warm_cache", "test-books", stdout=out)
        assert "test-books warmed in" in out.getvalue()
        with django_assert_num_queries(0):
            assert len(Book.objects.order_by("title").cached(timeout=60)) == 3
        with pytest.raises(CommandError, match="Unknown warmers"):
            call_command("warm_cache", "nope", stdout=out)
        with refreshing(), django_assert_num_queries(1):  # refresh re-reads and stores
            Book.objects.order_by("title").cached(timeout=60)
    finally:
        unregister_warmer("test-books")


def test_written_tables_parser():
    assert written_tables('SELECT * FROM "cacheapp_book"') == set()
    assert written_tables('UPDATE "cacheapp_book" SET "pages" = 1') == {"cacheapp_book"}
    assert written_tables('INSERT INTO "cacheapp_author" ("name") VALUES (%s)') == {"cacheapp_author"}
    assert written_tables("delete from public.cacheapp_book where id = 1") == {"cacheapp_book"}
    assert written_tables("TRUNCATE cacheapp_book, cacheapp_author") == {"cacheapp_book", "cacheapp_author"}
    assert written_tables("WITH x AS (SELECT 1) SELECT * FROM cacheapp_book") == set()
    assert written_tables("WITH d AS (DELETE FROM cacheapp_book RETURNING 1) SELECT 1") == {"cacheapp_book"}
    assert written_tables("TRUNCATE some_table_django_does_not_know") is None


def test_system_checks():
    assert check_cache() == []
    with override_settings(SCALEOPS_CACHE_ALIAS="nope"):
        assert [m.id for m in check_cache()] == ["scaleops.E301"]
    locmem = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with override_settings(CACHES=locmem):
        assert [m.id for m in check_cache()] == ["scaleops.E302"]
    with override_settings(SCALEOPS_CACHE_LEASE_WAIT_MS=0, SCALEOPS_CACHE_STALE_GRACE=-1):
        assert [m.id for m in check_settings()] == ["scaleops.E002", "scaleops.E002"]
    with override_settings(SCALEOPS_CACHE_DEPENDENCIES={"cacheapp.Book": ["cacheapp.Nope"]}):
        (message,) = check_cache()
        assert message.id == "scaleops.E304" and "cacheapp.Nope" in message.msg
    with override_settings(SCALEOPS_CACHE_FRESHNESS_HOOK="no.such.hook"):
        assert [m.id for m in check_cache()] == ["scaleops.E305"]
    with override_settings(SCALEOPS_CACHE_FILL_USING="primary-typo"):
        (message,) = check_cache()
        assert message.id == "scaleops.E306" and "'primary-typo'" in message.msg


def test_disabled_cache_reads_the_database_and_skips_invalidation(books, django_assert_num_queries):
    Book.objects.cached_count(timeout=60)
    before = stamp("cacheapp_book")
    with override_settings(SCALEOPS_CACHE_ENABLED=False):
        with django_assert_num_queries(2):
            assert Book.objects.cached_count(timeout=60) == 3
            Book.objects.filter(title="A1").update(pages=1)
        assert stamp("cacheapp_book") == before


@pytest.mark.django_db(transaction=True, databases=["default", "pgbouncer"])
def test_fill_using_reads_misses_from_the_named_alias(books):
    seen: list[str] = []

    def spy(execute, sql, params, many, context):
        seen.append(context["connection"].alias)
        return execute(sql, params, many, context)

    with override_settings(SCALEOPS_CACHE_FILL_USING="pgbouncer"), connections["pgbouncer"].execute_wrapper(spy):
        assert Book.objects.cached_count(timeout=60) == 3
    assert seen == ["pgbouncer"]


def test_repeatable_read_transactions_bypass_the_cache(books, django_assert_num_queries):
    Book.objects.cached_count(timeout=60)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        saved = getattr(connection, "isolation_level", None)
        setattr(connection, "isolation_level", IsolationLevel.REPEATABLE_READ)  # what OPTIONS would set  # noqa: B010
        try:
            with django_assert_num_queries(1):
                assert Book.objects.cached_count(timeout=60) == 3
        finally:
            setattr(connection, "isolation_level", saved)  # noqa: B010


def test_row_scoped_get_by_pk_is_invalidated_only_by_its_row(books, django_assert_num_queries):
    a1, _a2, b1 = books

    def pages(pk: int) -> int:
        return Book.objects.cached_get(pk=pk, timeout=60).pages

    assert (pages(a1.pk), pages(b1.pk)) == (10, 30)
    a1.pages = 11
    a1.save()  # UPDATE ... WHERE "id" = %s: attributed to row a1
    with django_assert_num_queries(1):
        assert pages(a1.pk) == 11
    with django_assert_num_queries(0):
        assert pages(b1.pk) == 30
    Book.objects.filter(pk__in=[b1.pk]).update(pages=31)  # attributed too
    Book.objects.create(title="C1", author=a1.author)  # a new row changes no existing one
    with django_assert_num_queries(1):
        assert pages(b1.pk) == 31
        assert pages(a1.pk) == 11
    Book.objects.filter(title="B1").update(pages=32)  # rows unknown: every row entry goes
    with django_assert_num_queries(2):
        assert (pages(a1.pk), pages(b1.pk)) == (11, 32)
    bulk_rows_written.send(sender=Book, using="default", operation="update", pks=[a1.pk])
    with django_assert_num_queries(1):
        assert (pages(a1.pk), pages(b1.pk)) == (11, 32)
    a1.delete()
    with pytest.raises(Book.DoesNotExist):
        Book.objects.cached_get(pk=a1.pk, timeout=60)
    # Not a plain pk lookup: table-scoped as usual.
    assert Book.objects.filter(pages__gt=0).cached_get(pk=b1.pk, timeout=60).pages == 32


def test_written_rows_parser():
    from django_scaleops.cache.keys import written_rows

    table = "cacheapp_book"
    assert written_rows(f'UPDATE "{table}" SET "pages" = %s WHERE "{table}"."id" = %s', [5, 7]) == (table, ["7"])
    assert written_rows(f'DELETE FROM "{table}" WHERE "{table}"."id" IN (%s, %s)', (3, 4)) == (table, ["3", "4"])
    bulk_update = (
        f'UPDATE "{table}" SET "pages" = CASE WHEN ("{table}"."id" = %s) THEN %s ELSE NULL END'
        f' WHERE "{table}"."id" IN (%s)'
    )
    assert written_rows(bulk_update, [1, 50, 1]) == (table, ["1"])
    assert written_rows(f'UPDATE "{table}" SET "pages" = %s WHERE "{table}"."author_id" = %s', [5, 7]) is None
    assert written_rows(f'UPDATE "{table}" SET "pages" = %s WHERE ("{table}"."id" = %s AND x)', [5, 7]) is None
    assert written_rows(f'UPDATE "{table}" SET "pages" = %s', [5]) is None


def test_async_variants(books, django_assert_num_queries):
    from asgiref.sync import async_to_sync

    async def read() -> tuple[list[str], str, int, bool]:
        rows = await Book.objects.order_by("title").acached(timeout=60)
        one = await Book.objects.acached_get(title="B1", timeout=60)
        count = await Book.objects.acached_count(timeout=60)
        exists = await Book.objects.filter(pages=10).acached_exists(timeout=60)
        return titles(rows), one.title, count, exists

    assert async_to_sync(read)() == (["A1", "A2", "B1"], "B1", 3, True)
    with django_assert_num_queries(0):
        assert async_to_sync(read)() == (["A1", "A2", "B1"], "B1", 3, True)


def test_an_undecodable_entry_is_recomputed_not_an_error():
    assert with_cache("bad:k", lambda: "good", 60) == "good"
    redis = get_redis_connection("default")
    (full,) = [k for k in redis.keys("*") if b":k:" in k]
    redis.set(full, b"\x80\x05not a pickle", px=60_000)
    assert with_cache("bad:k", lambda: "recomputed", 60) == "recomputed"
    assert with_cache("bad:k", lambda: "again", 60) == "recomputed"


def test_cached_function_keys_model_arguments_by_primary_key(books):
    a1, a2, _ = books
    Book.objects.filter(pk=a2.pk).update(title="A1")  # same __str__ as a1 now
    a2.refresh_from_db()
    assert str(a1) == str(a2)

    @cached_function(timeout=60)
    def pages_of(book: Book) -> int:
        return book.pages

    assert (pages_of(a1), pages_of(a2)) == (10, 20)


def test_cache_checks_are_bound():
    from django.core.management.base import SystemCheckError

    with override_settings(SCALEOPS_CACHE_ALIAS="nope"), pytest.raises(SystemCheckError, match=r"scaleops\.E301"):
        call_command("check", stdout=StringIO())


def test_statistics_are_flushed_to_redis_as_cluster_totals():
    from django_scaleops.cache import cluster

    cluster.reset()
    with_cache("cl:1", lambda: 1, 60)
    with_cache("cl:1", lambda: 1, 60)
    # Another process's flush, as it would arrive in Redis.
    redis = get_redis_connection("default")
    from django_scaleops.cache.backend import gate

    redis.hincrbyfloat(gate.key("stats:cl"), "hits", 5)
    figures = metrics.collect()["cache"]
    assert figures["prefixes"]["cl"]["hits"] == 1  # this process
    assert figures["cluster"]["prefixes"]["cl"]["hits"] == 6  # every process
    assert figures["cluster"]["prefixes"]["cl"]["misses"] == 1
    cluster.flush()  # nothing new: no double counting
    assert cluster.snapshot()["prefixes"]["cl"]["hits"] == 6
    with override_settings(SCALEOPS_CACHE_STATS_FLUSH_INTERVAL=0):
        assert "cluster" not in metrics.collect()["cache"]


def test_without_a_redis_cache_writes_queue_no_invalidation(books):
    locmem = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with override_settings(CACHES=locmem), transaction.atomic():
        Book.objects.filter(pk=books[0].pk).update(pages=99)
        assert not wrote_in_transaction()
    with transaction.atomic():
        Book.objects.filter(pk=books[0].pk).update(pages=98)
        assert wrote_in_transaction()


def test_a_row_entry_keyed_by_a_decimal_written_in_another_form_is_invalidated(django_assert_num_queries):
    """The row stamp is named by the key's value, not its spelling: a read by "1.5" and a save of
    the row (whose key the database gives back as 1.50) name one stamp."""
    from decimal import Decimal

    from tests.cacheapp.models import Price

    Price.objects.create(code=Decimal("1.5"), label="before")
    assert Price.objects.cached_get(pk="1.5", timeout=60).label == "before"
    row = Price.objects.get(pk=Decimal("1.50"))
    assert str(row.pk) == "1.50"
    row.label = "after"
    row.save()  # UPDATE ... WHERE "code" = 1.50: attributed to that row
    with django_assert_num_queries(1):
        assert Price.objects.cached_get(pk="1.5", timeout=60).label == "after"
    with django_assert_num_queries(0):
        assert Price.objects.cached_get(pk=Decimal("1.500"), timeout=60).label == "after"
