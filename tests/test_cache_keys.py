"""Cache keys carry everything that decides a result, and every write path invalidates like an ORM write.

Each test here was a wrong answer once: two tenants sharing an entry, shapes sharing an entry,
rolled-back bulk rows served from the cache.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import decimal
import enum
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, connections, models, transaction
from django.db.models import Prefetch

from django_scaleops.cache import UnkeyableValue, cached_function
from django_scaleops.cache.encoding import encode, encode_sql_param
from tests.cacheapp.helpers import clean_cache  # noqa: F401
from tests.cacheapp.models import Author, Book, Doc, DocProxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_cache")]

# ~40 characters that differ only at the end: psycopg's reprs cut values short before that.
TENANT_A = "tenant-0000000000000000000000000000000-a"
TENANT_B = "tenant-0000000000000000000000000000000-b"


class Rollback(Exception):
    pass


@contextlib.contextmanager
def rolled_back() -> Iterator[None]:
    """A transaction (or savepoint) whose block runs and is then rolled back."""
    with contextlib.suppress(Rollback), transaction.atomic():
        yield
        raise Rollback


def row(doc: Doc) -> tuple[Any, ...]:
    return (doc.pk, doc.title, doc.meta, bytes(doc.blob), doc.amount, doc.at)


# ---- keys


def test_two_tenants_with_json_parameters_that_differ_late_get_their_own_rows():
    Doc.objects.create(title="a", meta={"tenant": TENANT_A})
    Doc.objects.create(title="b", meta={"tenant": TENANT_B})
    first = Doc.objects.filter(meta__contains={"tenant": TENANT_A}).cached(timeout=60)
    second = Doc.objects.filter(meta__contains={"tenant": TENANT_B}).cached(timeout=60)
    assert [d.title for d in first] == ["a"]
    assert [d.title for d in second] == ["b"]


def test_binary_parameters_sharing_their_first_bytes_get_their_own_rows():
    prefix = bytes(range(200))
    Doc.objects.create(title="one", blob=prefix + b"\x01")
    Doc.objects.create(title="two", blob=prefix + b"\x02")
    assert [d.title for d in Doc.objects.filter(blob=prefix + b"\x01").cached(timeout=60)] == ["one"]
    assert [d.title for d in Doc.objects.filter(blob=prefix + b"\x02").cached(timeout=60)] == ["two"]


def test_each_result_shape_has_its_own_entry():
    docs = [Doc.objects.create(title=f"d{i}") for i in range(2)]
    ids = [d.pk for d in docs]
    queryset: Any = Doc.objects.order_by("pk")
    flat = queryset.values_list("id", flat=True).cached(timeout=60)
    tuples = queryset.values_list("id").cached(timeout=60)
    named = queryset.values_list("id", named=True).cached(timeout=60)
    dicts = queryset.values("id").cached(timeout=60)
    instances = queryset.only("id").cached(timeout=60)
    assert flat == ids
    assert tuples == [(pk,) for pk in ids]
    assert [tuple(r) for r in named] == [(pk,) for pk in ids] and named[0].id == ids[0]
    assert dicts == [{"id": pk} for pk in ids]
    assert [d.pk for d in instances] == ids and isinstance(instances[0], Doc)


def test_a_proxy_model_does_not_share_the_concrete_models_entry():
    Doc.objects.create(title="x")
    concrete = Doc.objects.all().cached(timeout=60)
    proxied = DocProxy.objects.all().cached(timeout=60)
    assert type(concrete[0]) is Doc
    assert type(proxied[0]) is DocProxy


def test_prefetch_querysets_and_to_attr_are_part_of_the_key():
    ada = Author.objects.create(name="Ada")
    Book.objects.create(title="short", pages=10, author=ada)
    Book.objects.create(title="long", pages=900, author=ada)
    base = Author.objects.order_by("pk")
    short = base.prefetch_related(Prefetch("books", Book.objects.filter(pages__lt=100), to_attr="picked")).cached(60)
    long = base.prefetch_related(Prefetch("books", Book.objects.filter(pages__gt=100), to_attr="picked")).cached(60)
    other = base.prefetch_related(Prefetch("books", Book.objects.filter(pages__lt=100), to_attr="other")).cached(60)
    assert [b.title for b in short[0].picked] == ["short"]
    assert [b.title for b in long[0].picked] == ["long"]
    assert [b.title for b in other[0].other] == ["short"]


def test_a_prefetch_filter_on_another_table_is_invalidated_by_that_table():
    ada = Author.objects.create(name="Ada")
    book = Book.objects.create(title="t", author=ada)
    Doc.objects.create(title="x", author=ada)
    queryset = Author.objects.prefetch_related(
        Prefetch("books", Book.objects.filter(author__docs__title="x"), to_attr="with_x")
    )
    assert [b.pk for b in queryset.cached(60)[0].with_x] == [book.pk]
    Doc.objects.update(title="y")  # the prefetch's join table only
    assert queryset.cached(60)[0].with_x == []


@pytest.mark.django_db(transaction=True, databases=["default", "pgbouncer"])
def test_aliases_with_the_same_name_on_other_servers_do_not_share_entries(django_assert_num_queries):
    Doc.objects.create(title="x")
    direct, pooled = connections["default"].settings_dict, connections["pgbouncer"].settings_dict
    assert direct["NAME"] == pooled["NAME"] and direct["PORT"] != pooled["PORT"]
    Doc.objects.using("default").all().cached(60)
    with django_assert_num_queries(1, connection=connections["pgbouncer"]):
        Doc.objects.using("pgbouncer").all().cached(60)  # a miss: another server's entry


@pytest.mark.django_db(transaction=True, databases=["default", "replica_mirror"])
def test_a_search_path_in_options_is_another_database():
    """Schema-per-tenant set-ups: same server, same NAME, another search_path."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE SCHEMA IF NOT EXISTS tenant_b")
        cursor.execute("CREATE TABLE IF NOT EXISTS tenant_b.cacheapp_doc (LIKE public.cacheapp_doc INCLUDING ALL)")
        cursor.execute("INSERT INTO tenant_b.cacheapp_doc (title, meta, blob, amount) VALUES ('b', '{}', '', 0)")
    Doc.objects.create(title="a")
    tenant = connections["replica_mirror"]  # the same server and database as "default"
    saved = tenant.settings_dict
    tenant.close()
    tenant.settings_dict = copy.deepcopy(saved)
    tenant.settings_dict["OPTIONS"] = {**saved.get("OPTIONS", {}), "options": "-c search_path=tenant_b"}
    try:
        assert [d.title for d in Doc.objects.using("default").all().cached(60)] == ["a"]
        assert [d.title for d in Doc.objects.using("replica_mirror").all().cached(60)] == ["b"]
    finally:
        tenant.close()
        tenant.settings_dict = saved
        with connection.cursor() as cursor:
            cursor.execute("DROP SCHEMA tenant_b CASCADE")


class Colour(enum.Enum):
    RED = 1
    ONE = "1"


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (1, "1"),
        (1, 1.0),
        (True, 1),
        (b"ab", "ab"),
        ([1, 2], (1, 2)),
        ({"a": 1}, {"a": "1"}),
        (decimal.Decimal("1.0"), decimal.Decimal("1.00")),
        (datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC), datetime.datetime(2026, 1, 1)),
        (uuid.UUID(int=1), str(uuid.UUID(int=1))),
        (Colour.RED, 1),
        (Colour.ONE, "1"),
        (None, ""),
        ("x" * 40 + "a", "x" * 40 + "b"),
        (b"\x00" * 100 + b"\x01", b"\x00" * 100 + b"\x02"),
        ({1, 2}, [1, 2]),
    ],
)
def test_values_that_look_alike_encode_differently(left, right):
    assert encode(left) != encode(right)
    assert encode_sql_param(left) != encode_sql_param(right)


def test_encoding_is_stable_across_set_and_dict_order():
    assert encode({"b": 1, "a": 2}) == encode({"a": 2, "b": 1})
    assert encode({3, 1, 2}) == encode({2, 3, 1})


def test_psycopg_json_and_ranges_are_keyed_by_their_full_value():
    from psycopg.types.json import Jsonb
    from psycopg.types.range import Range

    assert encode_sql_param(Jsonb({"t": TENANT_A})) != encode_sql_param(Jsonb({"t": TENANT_B}))
    assert encode_sql_param(Range(1, 5)) != encode_sql_param(Range(1, 5, "[]"))


def test_cached_function_refuses_an_argument_it_cannot_key_and_names_it():
    class Opaque:
        def __repr__(self) -> str:
            return "same for every instance"

    @cached_function(timeout=60)
    def describe(tenant: str, thing: object) -> str:
        return "never"

    with pytest.raises(UnkeyableValue, match="argument 'thing'"):
        describe("t", Opaque())
    with pytest.raises(UnkeyableValue, match="argument 'thing'"):
        describe("t", thing=Opaque())


def test_cached_function_keys_late_differences_and_types():
    calls: list[object] = []

    @cached_function(timeout=60)
    def echo(value: object) -> object:
        calls.append(value)
        return value

    for value in (TENANT_A, TENANT_B, 1, "1", b"1", (1,), [1], decimal.Decimal("1")):
        assert echo(value) == value
    assert echo(TENANT_A) == TENANT_A
    assert len(calls) == 8


# ---- write paths


def test_rolled_back_batch_create_rows_are_never_served(django_assert_num_queries):
    assert Doc.objects.all().cached(60) == []
    with rolled_back():
        Doc.objects.batch_create({"title": f"phantom {i}"} for i in range(3))
        inside = Doc.objects.all().cached(60)  # bypasses the cache: the transaction wrote
        assert len(inside) == 3
    assert Doc.objects.all().cached(60) == []


def test_committed_batch_create_invalidates():
    assert Doc.objects.all().cached(60) == []
    Doc.objects.batch_create([{"title": "new"}])
    assert [d.title for d in Doc.objects.all().cached(60)] == ["new"]
    with transaction.atomic():
        Doc.objects.batch_create([{"title": "newer"}])
    assert sorted(d.title for d in Doc.objects.all().cached(60)) == ["new", "newer"]


def write_paths() -> dict[str, Any]:
    def batch_update() -> None:
        docs = list(Doc.objects.all())
        for doc in docs:
            doc.title = "changed"
        Doc.objects.batch_update(docs, ["title"])

    def raw_sql() -> None:
        with connection.cursor() as cursor:
            cursor.execute("UPDATE cacheapp_doc SET title = 'changed'")

    def executemany() -> None:
        with connection.cursor() as cursor:
            cursor.executemany(
                "UPDATE cacheapp_doc SET title = %s WHERE id = %s", [("changed", d.pk) for d in Doc.objects.all()]
            )

    def data_modifying_cte() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "WITH changed AS (UPDATE cacheapp_doc SET title = 'changed' RETURNING id) SELECT count(*) FROM changed"
            )

    return {
        "batch_update": batch_update,
        "batch_delete": lambda: Doc.objects.all().batch_delete(),
        "raw SQL": raw_sql,
        "executemany": executemany,
        "data-modifying CTE": data_modifying_cte,
        "bulk_create": lambda: Doc.objects.bulk_create([Doc(title="changed")]),
        "update()": lambda: Doc.objects.update(title="changed"),
    }


@pytest.mark.parametrize("path", list(write_paths()))
def test_every_write_path_invalidates_on_commit_and_not_on_rollback(path):
    write = write_paths()[path]
    Doc.objects.create(title="before")
    truth = [row(d) for d in Doc.objects.order_by("pk")]
    assert [row(d) for d in Doc.objects.order_by("pk").cached(60)] == truth

    with rolled_back():
        write()
        inside = [row(d) for d in Doc.objects.order_by("pk").cached(60)]
        assert inside == [row(d) for d in Doc.objects.order_by("pk")] != truth
    assert [row(d) for d in Doc.objects.order_by("pk").cached(60)] == truth

    with transaction.atomic():
        with rolled_back():  # a savepoint
            write()
        assert [row(d) for d in Doc.objects.order_by("pk").cached(60)] == truth

    with transaction.atomic():
        write()
    after = [row(d) for d in Doc.objects.order_by("pk")]
    assert after != truth
    assert [row(d) for d in Doc.objects.order_by("pk").cached(60)] == after


# ---- the trust boundary: signed values


SIGNED_SETTINGS = {"SCALEOPS_CACHE_SIGNING_KEY": "a-test-signing-key-0123456789abcdef"}


def test_with_a_signing_key_a_value_written_without_it_is_never_unpickled(tmp_path):
    import pickle

    from django.test import override_settings
    from django_redis import get_redis_connection

    Doc.objects.create(title="real")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(marker), "w"))

    with override_settings(**SIGNED_SETTINGS):
        assert [d.title for d in Doc.objects.all().cached(60)] == ["real"]
        client = get_redis_connection("default")
        entries = [
            k for k in client.keys("*") if client.type(k) == b"string" and client.get(k).startswith(b"scaleops-hmac1:")
        ]
        assert entries, "the value was not stored signed"
        for key in entries:  # someone with write access to Redis replaces the value
            client.set(key, pickle.dumps(Exploit()), keepttl=True)
        assert [d.title for d in Doc.objects.all().cached(60)] == ["real"]
    assert not marker.exists(), "an unsigned value was unpickled"


def test_signed_values_round_trip_and_unsigned_ones_are_recomputed(django_assert_num_queries):
    from django.test import override_settings

    Doc.objects.create(title="x")
    Doc.objects.all().cached(60)  # stored unsigned
    with override_settings(**SIGNED_SETTINGS):
        with django_assert_num_queries(1):
            assert [d.title for d in Doc.objects.all().cached(60)] == ["x"]  # rejected, read again
        with django_assert_num_queries(0):
            assert [d.title for d in Doc.objects.all().cached(60)] == ["x"]  # now signed: a hit


# ---- the per-queryset key memo and the one-MGET hit (issue 22)


def test_a_held_queryset_read_in_two_time_zones_gets_each_zones_rows():
    """``__date`` compiles the active zone into the parameters: the memo is keyed by the zone."""
    from django.utils import timezone

    Doc.objects.create(title="late", at=datetime.datetime(2026, 1, 1, 23, 30, tzinfo=datetime.UTC))
    held: Any = Doc.objects.filter(at__date=datetime.date(2026, 1, 1)).values_list("title", flat=True)
    for zone in ("UTC", "Asia/Tokyo", "UTC", "Asia/Tokyo"):  # UTC+9: the row falls on 2 January
        with timezone.override(zone):
            assert held.cached(60) == list(held.all()), zone
    with timezone.override("UTC"):
        assert held.cached(60) == ["late"]
    with timezone.override("Asia/Tokyo"):
        assert held.cached(60) == []


def test_a_refined_clone_of_a_held_queryset_gets_its_own_entry():
    Doc.objects.create(title="a")
    Doc.objects.create(title="b")
    held: Any = Doc.objects.order_by("pk").values_list("title", flat=True)
    assert held.cached(60) == ["a", "b"]
    assert held.filter(title="b").cached(60) == ["b"]  # a clone: no memo of its own yet
    assert held.exclude(title="b").cached(60) == ["a"]
    assert held[:1].cached(60) == ["a"]
    assert held.cached(60) == ["a", "b"]


def test_a_held_queryset_whose_query_was_replaced_is_keyed_again():
    Doc.objects.create(title="a")
    Doc.objects.create(title="b")
    held: Any = Doc.objects.filter(title="a")
    assert [d.title for d in held.cached(60)] == ["a"]
    held.query = Doc.objects.filter(title="b").query
    assert [d.title for d in held.cached(60)] == ["b"]


def test_a_held_queryset_follows_a_new_cache_prefix_and_timeout(django_assert_num_queries):
    """The keys a held queryset keeps are built again when the cache configuration changes (another
    KEY_PREFIX: another namespace, a miss); a timeout changes how long, not which entry."""
    from django.conf import settings
    from django.test import override_settings

    Doc.objects.create(title="x")
    held: Any = Doc.objects.all()
    held.cached(60)
    with django_assert_num_queries(0):
        held.cached(60)
    default = settings.CACHES["default"]
    elsewhere = {**settings.CACHES, "default": {**default, "KEY_PREFIX": "another-prefix"}}
    with override_settings(CACHES=elsewhere), django_assert_num_queries(1):
        assert [d.title for d in held.cached(60)] == ["x"]  # its own namespace: a miss
    with django_assert_num_queries(0):
        held.cached(60)  # back under the first prefix: that entry is still there
    Doc.objects.update(title="y")
    with django_assert_num_queries(1):
        assert [d.title for d in held.cached(30)] == ["y"]  # the table's stamp moved for every timeout
    with django_assert_num_queries(0):
        assert [d.title for d in held.cached(60)] == ["y"]  # the same entry, whatever the timeout


class ToPgBouncer:
    """Sends every read to the "pgbouncer" alias: another server than "default"."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return "pgbouncer"


@pytest.mark.django_db(transaction=True, databases=["default", "pgbouncer"])
def test_a_held_queryset_routed_to_another_server_does_not_reuse_its_key(django_assert_num_queries):
    from django.test import override_settings

    Doc.objects.create(title="x")
    held: Any = Doc.objects.all()
    assert [d.title for d in held.cached(60)] == ["x"]
    routed = override_settings(DATABASE_ROUTERS=[f"{__name__}.ToPgBouncer"])
    with routed, django_assert_num_queries(1, connection=connections["pgbouncer"]):
        held.cached(60)  # a miss: another server's entry, not the memoised key of "default"


def test_a_hit_is_one_mget_and_no_script():
    from django_redis import get_redis_connection

    Doc.objects.create(title="x")
    held: Any = Doc.objects.all()
    held.cached(60)  # the miss: the READ and STORE scripts
    held.cached(60)  # a hit, which also tells this process the stamps' versions
    client = get_redis_connection("default")
    client.config_resetstat()
    assert [d.title for d in held.cached(60)] == ["x"]
    calls = {name: figures["calls"] for name, figures in client.info("commandstats").items()}
    assert calls.get("cmdstat_mget") == 1
    assert "cmdstat_evalsha" not in calls and "cmdstat_eval" not in calls and "cmdstat_get" not in calls


def test_a_stamp_bumped_by_another_process_voids_this_processes_guess(django_assert_num_queries):
    """A one-MGET hit checks the stamps it read against the versions it guessed."""
    from django_redis import get_redis_connection

    from django_scaleops.cache.keys import stamp_key

    Doc.objects.create(title="x")
    held: Any = Doc.objects.values_list("title", flat=True)
    assert held.cached(60) == ["x"]
    assert held.cached(60) == ["x"]  # this process now guesses the versions
    get_redis_connection("default").incr(stamp_key(Doc._meta.db_table))  # another process's commit
    with django_assert_num_queries(1):
        assert held.cached(60) == ["x"]  # a miss: the guess was out of date
    with django_assert_num_queries(0):
        assert held.cached(60) == ["x"]


def test_a_value_stored_without_its_expiry_by_an_older_release_is_still_served(django_assert_num_queries):
    from django_redis import get_redis_connection

    from django_scaleops.cache.backend import gate

    Doc.objects.create(title="x")
    held: Any = Doc.objects.values_list("title", flat=True)
    assert held.cached(60) == ["x"]
    client = get_redis_connection("default")
    (full,) = [k for k in client.keys("*") if b":q:" in k and not k.endswith(b":lease")]
    client.set(full, gate.encode((["x"], 0.01, 30)), keepttl=True)  # the three-item form
    with django_assert_num_queries(0):
        assert held.cached(60) == ["x"]


# ---- cached_get(pk=...) keyed without compiling (issue 22)

# Plain querysets a get(pk=...) may be read from: the shapes, the deferred fields, the model.
PLAIN_SHAPES: dict[str, Any] = {
    "all": lambda m: m.objects.all(),
    "only title": lambda m: m.objects.only("title"),
    "only title again": lambda m: m.objects.only("title").all(),
    "defer title": lambda m: m.objects.defer("title"),
    "defer pages": lambda m: m.objects.defer("pages"),
    "values": lambda m: m.objects.values(),
    "values title": lambda m: m.objects.values("title"),
    "values pk": lambda m: m.objects.values("pk"),
    "values_list title": lambda m: m.objects.values_list("title"),
    "values_list flat": lambda m: m.objects.values_list("title", flat=True),
    "values_list named": lambda m: m.objects.values_list("title", named=True),
    "ordered": lambda m: m.objects.order_by("-pk"),
}
PK_VALUES: list[int | str] = [1, "1", 2, "02", 10, 2**31 + 5]


def _compiled(queryset: Any, pk: Any) -> tuple[Any, ...]:
    """What ``queryset.get(pk=pk)`` sends, as Django's get() builds it: filter, no ordering, a limit."""
    from django.db.models.query import MAX_GET_RESULTS

    got = queryset.filter(pk=pk).order_by()
    got.query.set_limits(high=MAX_GET_RESULTS)
    sql, params = got.query.get_compiler(using="default").as_sql()
    return (type(got), got._iterable_class, getattr(got, "_fields", None), sql, tuple(params))


def _fast_key(queryset: Any, pk: Any) -> bytes | None:
    from django_scaleops.cache.keys import pk_query_key

    plain = queryset._plain_pk_lookup((), {"pk": pk})
    assert plain is not None
    return pk_query_key(queryset, "default", plain).digest


@pytest.mark.parametrize("model_name", ["Book", "Author"])
def test_a_get_by_pk_key_built_without_sql_never_joins_two_different_queries(model_name: str):
    """Every pair of plain querysets and keys: equal keys only where the compiled SQL and its
    parameters (and the result shape) are equal, so no entry is shared by two queries."""
    from tests.cacheapp import models as cache_models

    model = getattr(cache_models, model_name)
    cases = []
    for shape, build in PLAIN_SHAPES.items():
        try:
            queryset = build(model)
            _compiled(queryset, PK_VALUES[0])
        except Exception:  # a field the model does not have
            continue
        if queryset._plain_pk_lookup((), {"pk": 1}) is None:
            continue  # not plain (values() of a model with a foreign key joins): keyed by its SQL
        cases += [((shape, pk), _fast_key(queryset, pk), _compiled(queryset, pk)) for pk in PK_VALUES]
    by_key: dict[bytes | None, set[tuple[Any, ...]]] = {}
    by_query: dict[tuple[Any, ...], set[bytes | None]] = {}
    for _, key, compiled in cases:
        by_key.setdefault(key, set()).add(compiled)
        by_query.setdefault(compiled, set()).add(key)
    assert all(len(queries) == 1 for queries in by_key.values())
    # The other way only costs misses; still, the same query (1 and "1", only() twice, an
    # ordering get() drops) finds the same entry.
    assert all(len(keys) == 1 for keys in by_query.values())
    assert len(by_key) >= 3 * len({str(int(pk)) for pk in PK_VALUES})  # shapes do get keys of their own


def test_the_get_by_pk_key_follows_the_database_and_the_models_columns(monkeypatch):
    from django_scaleops.cache import keys

    books = Book.objects.all()
    first = _fast_key(books, 1)
    settings_dict = connections["default"].settings_dict
    monkeypatch.setitem(settings_dict, "NAME", settings_dict["NAME"] + "_other")
    assert _fast_key(books, 1) != first  # another database: another key
    monkeypatch.undo()
    assert _fast_key(books, 1) == first
    added = models.IntegerField(default=0)
    added.set_attributes_from_name("added")
    monkeypatch.setattr(Book._meta, "concrete_fields", (*Book._meta.concrete_fields, added))
    monkeypatch.setattr(keys, "_PK_SHAPES", {})  # a new process, as after a deploy
    assert _fast_key(books, 1) != first  # a deploy that adds a column


def test_cached_get_by_pk_shapes_do_not_share_entries(django_assert_num_queries):
    author = Author.objects.create(name="a")
    book = Book.objects.create(title="t", pages=7, author=author)
    deferred = Book.objects.only("title").cached_get(pk=book.pk, timeout=60)
    assert deferred.get_deferred_fields() == {"pages", "author_id"}
    with django_assert_num_queries(1):
        full = Book.objects.cached_get(pk=book.pk, timeout=60)
    assert full.get_deferred_fields() == set() and full.pages == 7
    with django_assert_num_queries(1):
        titles: Any = Book.objects.values("title")
        assert titles.cached_get(pk=book.pk, timeout=60) == {"title": "t"}
    with django_assert_num_queries(0):
        assert Book.objects.cached_get(pk=str(book.pk), timeout=60).pages == 7  # "5" is 5
        assert Book.objects.only("title").cached_get(pk=book.pk, timeout=60).get_deferred_fields() == {
            "pages",
            "author_id",
        }
    # Not plain (a filter): compiled as before, and a missing row is raised, never cached.
    with pytest.raises(Book.DoesNotExist):
        Book.objects.filter(pages=8).cached_get(pk=book.pk, timeout=60)
    with pytest.raises(Book.DoesNotExist):
        Book.objects.cached_get(pk=book.pk + 1000, timeout=60)


def test_row_keys_name_a_value_once_whatever_its_spelling():
    from zoneinfo import ZoneInfo

    from django_scaleops.cache.keys import row_key

    assert row_key(decimal.Decimal("1.5")) == row_key(decimal.Decimal("1.50")) == row_key(decimal.Decimal("1.500"))
    assert row_key(decimal.Decimal("100")) == row_key(decimal.Decimal("100.00")) != row_key(decimal.Decimal("10"))
    assert row_key(decimal.Decimal("NaN")) == "NaN"
    utc = datetime.datetime(2026, 1, 1, 12, tzinfo=datetime.UTC)
    assert row_key(utc) == row_key(utc.astimezone(ZoneInfo("Asia/Tokyo")))
    assert row_key(utc) != row_key(utc + datetime.timedelta(microseconds=1))
    assert row_key(7) == "7" and row_key("a b") == "a b"
    assert row_key(uuid.UUID(int=5)) == str(uuid.UUID(int=5))
