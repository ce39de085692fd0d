"""Differential test: `.cached()` answers exactly what the database answers, whatever is written.

Hypothesis generates querysets (filters with JSON, binary, text, numeric and datetime parameters,
values / values_list shapes, ordering, slices, select_related and prefetches) interleaved with
writes of every kind (save, update(), delete, bulk_create, batch_create, batch_update,
batch_delete, raw SQL), in autocommit or in transactions that commit or roll back, with reads
inside those transactions too. After each read, the cached answer must equal the uncached one.

Values are drawn to look alike to a careless key builder: long strings and byte strings that
differ only at the end, 1 and "1", equal decimals written differently, one instant in several
time zones. CI runs a few examples (``SCALEOPS_FUZZ_EXAMPLES``, default 8); ``make fuzz`` many.
"""

from __future__ import annotations

import datetime
import decimal
import os
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import Prefetch, Q, QuerySet
from django.test import override_settings
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from tests.cacheapp.helpers import clean_cache  # noqa: F401
from tests.cacheapp.models import Author, Doc

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_cache")]

EXAMPLES = int(os.environ.get("SCALEOPS_FUZZ_EXAMPLES", "8"))
STEPS = int(os.environ.get("SCALEOPS_FUZZ_STEPS", "30"))

# Alike to repr()-based keys: psycopg cuts reprs short, so these differ only past the cut.
LONG = "t" * 38
texts = st.one_of(
    st.sampled_from([LONG + "-a", LONG + "-b", LONG + "-c", "1", "", "ü"]),
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=4),
)
blobs = st.one_of(
    st.sampled_from([b"\x00" * 40 + b"\x01", b"\x00" * 40 + b"\x02", b"", b"1"]),
    st.binary(max_size=4),
)
amounts = st.one_of(
    st.sampled_from([decimal.Decimal("1"), decimal.Decimal("1.0"), decimal.Decimal("1.0000"), decimal.Decimal(0)]),
    st.decimals(min_value=-1000, max_value=1000, places=4, allow_nan=False, allow_infinity=False),
)
ZONES = [datetime.UTC, ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York")]
moments = st.datetimes(
    min_value=datetime.datetime(2020, 1, 1), max_value=datetime.datetime(2030, 1, 1), timezones=st.sampled_from(ZONES)
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), texts)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["tenant", "n", "k"]), inner, max_size=2)
    ),
    max_leaves=5,
)
metas = st.fixed_dictionaries({"tenant": texts}, optional={"n": json_values, "k": json_values})
docs = st.fixed_dictionaries(
    {"title": texts, "meta": metas, "blob": blobs, "amount": amounts, "at": st.none() | moments}
)
modes = st.sampled_from(["autocommit", "commit", "rollback"])


def filters() -> st.SearchStrategy[Q]:
    return st.one_of(
        st.just(Q()),
        texts.map(lambda v: Q(title=v)),
        texts.map(lambda v: Q(title__startswith=v)),
        texts.map(lambda v: Q(meta__contains={"tenant": v})),
        texts.map(lambda v: Q(meta__tenant=v)),
        json_values.map(lambda v: Q(meta__n=v) if v is not None else Q(meta__n__isnull=True)),
        blobs.map(lambda v: Q(blob=v)),
        amounts.map(lambda v: Q(amount__gte=v)),
        st.lists(amounts, max_size=3).map(lambda v: Q(amount__in=v)),
        moments.map(lambda v: Q(at__lt=v)),
        texts.map(lambda v: Q(author__name=v)),
    )


SHAPES = ["instances", "values", "values_list", "flat", "named", "count", "exists"]
ORDERS = [("pk",), ("title", "pk"), ("-amount", "pk"), ("at", "pk")]
RELATED = ["none", "select_related", "prefetch", "prefetch_filtered"]


def plain(value: Any) -> Any:
    """Comparable values: bytes for memoryviews, tuples for namedtuples and lists."""
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return tuple(plain(v) for v in value)
    return value


def instance_row(doc: Doc) -> tuple[Any, ...]:
    author = doc.author.name if doc.author_id is not None and doc.author is not None else None
    picked = getattr(getattr(doc, "picked_author", None), "name", None)
    return (type(doc).__name__, doc.pk, doc.title, plain(doc.meta), bytes(doc.blob), doc.amount, doc.at, author, picked)


def describe(queryset: QuerySet[Any]) -> str:
    try:
        return str(queryset.query)
    except EmptyResultSet:  # e.g. filter(amount__in=[]): Django answers it without SQL
        return "(no SQL: empty result)"


class Rollback(Exception):
    pass


class CachedReads(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        Doc.objects.all().delete()
        Author.objects.all().delete()

    # ---- writes

    def write(self, mode: str, work: Callable[[], object]) -> None:
        note(f"write ({mode}): {getattr(work, '__name__', work)}")
        if mode == "autocommit":
            work()
        elif mode == "commit":
            with transaction.atomic():
                work()
        else:
            try:
                with transaction.atomic():
                    work()
                    raise Rollback
            except Rollback:
                pass

    @rule(fields=docs, mode=modes)
    def save_new(self, fields: dict[str, Any], mode: str) -> None:
        self.write(mode, lambda: Doc.objects.create(**fields))

    @rule(name=texts, mode=modes, attach=st.booleans())
    def new_author(self, name: str, mode: str, attach: bool) -> None:
        def work() -> None:
            author = Author.objects.create(name=name)
            if attach:
                Doc.objects.filter(pk__in=Doc.objects.order_by("pk").values("pk")[:2]).update(author=author)

        self.write(mode, work)

    @rule(name=texts, mode=modes)
    def rename_authors(self, name: str, mode: str) -> None:
        self.write(mode, lambda: Author.objects.update(name=name))

    @rule(fields=docs, which=st.integers(0, 5), mode=modes)
    def save_existing(self, fields: dict[str, Any], which: int, mode: str) -> None:
        def work() -> None:
            doc = Doc.objects.order_by("pk")[which : which + 1].first()
            if doc is not None:
                for name, value in fields.items():
                    setattr(doc, name, value)
                doc.save()

        self.write(mode, work)

    @rule(where=filters(), title=texts, amount=amounts, mode=modes)
    def update_where(self, where: Q, title: str, amount: decimal.Decimal, mode: str) -> None:
        self.write(mode, lambda: Doc.objects.filter(where).update(title=title, amount=amount))

    @rule(where=filters(), mode=modes)
    def delete_where(self, where: Q, mode: str) -> None:
        self.write(mode, lambda: Doc.objects.filter(where).delete())

    @rule(rows=st.lists(docs, max_size=3), mode=modes)
    def bulk_create(self, rows: list[dict[str, Any]], mode: str) -> None:
        self.write(mode, lambda: Doc.objects.bulk_create([Doc(**r) for r in rows]))

    @rule(rows=st.lists(docs, min_size=1, max_size=4), mode=modes)
    def batch_create(self, rows: list[dict[str, Any]], mode: str) -> None:
        self.write(mode, lambda: Doc.objects.batch_create(rows, batch_size=2))

    @rule(fields=docs, mode=modes)
    def batch_update(self, fields: dict[str, Any], mode: str) -> None:
        def work() -> None:
            changed = list(Doc.objects.order_by("pk")[:3])
            for doc in changed:
                doc.title, doc.meta, doc.amount = fields["title"], fields["meta"], fields["amount"]
            Doc.objects.batch_update(changed, ["title", "meta", "amount"])

        self.write(mode, work)

    @rule(where=filters(), mode=modes)
    def batch_delete(self, where: Q, mode: str) -> None:
        self.write(mode, lambda: Doc.objects.filter(where).batch_delete(batch_size=2))

    @rule(title=texts, mode=modes)
    def raw_sql(self, title: str, mode: str) -> None:
        def work() -> None:
            with connection.cursor() as cursor:
                cursor.execute("UPDATE cacheapp_doc SET amount = amount + 1 WHERE title = %s", [title])

        self.write(mode, work)

    # ---- reads

    def queryset(self, where: Q, order: tuple[str, ...], related: str) -> QuerySet[Doc]:
        queryset = Doc.objects.filter(where).order_by(*order)
        if related == "select_related":
            queryset = queryset.select_related("author")
        elif related == "prefetch":
            queryset = queryset.prefetch_related("author")
        elif related == "prefetch_filtered":
            queryset = queryset.prefetch_related(
                Prefetch("author", Author.objects.filter(name__startswith="t"), to_attr="picked_author")
            )
        return queryset

    def answers(self, queryset: Any, shape: str, window: tuple[int, int] | None) -> tuple[Any, Any]:
        if window is not None:
            queryset = queryset[window[0] : window[1]]
        if shape == "count":
            return queryset.cached_count(60), queryset.count()
        if shape == "exists":
            return queryset.cached_exists(60), queryset.exists()
        if shape == "values":
            queryset = queryset.values("pk", "title", "meta", "blob", "amount", "author__name")
        elif shape == "values_list":
            queryset = queryset.values_list("pk", "blob", "meta")
        elif shape == "flat":
            queryset = queryset.values_list("title", flat=True)
        elif shape == "named":
            queryset = queryset.values_list("pk", "amount", named=True)
        cached, fresh = queryset.cached(60), list(queryset._chain())
        if shape == "instances":
            return [instance_row(d) for d in cached], [instance_row(d) for d in fresh]
        if shape == "named":  # the class of each row too, not only its values
            return [(type(r).__name__, r._fields, plain(r)) for r in cached], [
                (type(r).__name__, r._fields, plain(r)) for r in fresh
            ]
        return [(type(r).__name__, plain(r)) for r in cached], [(type(r).__name__, plain(r)) for r in fresh]

    @rule(
        where=filters(),
        order=st.sampled_from(ORDERS),
        related=st.sampled_from(RELATED),
        shape=st.sampled_from(SHAPES),
        window=st.none() | st.tuples(st.integers(0, 2), st.integers(1, 4)),
    )
    def read(self, where: Q, order: tuple[str, ...], related: str, shape: str, window: tuple[int, int] | None) -> None:
        queryset = self.queryset(where, order, related)
        note(f"read {shape} {window}: {describe(queryset)}")
        cached, fresh = self.answers(queryset, shape, window)
        assert cached == fresh

    @rule(fields=docs, where=filters(), shape=st.sampled_from(SHAPES), rollback=st.booleans())
    def read_inside_a_writing_transaction(self, fields: dict[str, Any], where: Q, shape: str, rollback: bool) -> None:
        """Reads between a write and its commit (or rollback) answer what the transaction sees."""
        queryset = self.queryset(where, ("pk",), "none")
        try:
            with transaction.atomic():
                Doc.objects.batch_create([fields])
                cached, fresh = self.answers(queryset, shape, None)
                assert cached == fresh
                if rollback:
                    raise Rollback
        except Rollback:
            pass
        cached, fresh = self.answers(queryset, shape, None)
        assert cached == fresh


FUZZ = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_cached_reads_equal_the_database():
    run_state_machine_as_test(CachedReads, settings=FUZZ)


@override_settings(SCALEOPS_CACHE_L1_TIMEOUT=30)
def test_cached_reads_equal_the_database_with_the_in_process_tier():
    run_state_machine_as_test(CachedReads, settings=FUZZ)


@pytest.mark.django_db(transaction=True, databases=["default", "replica"])
def test_cached_reads_equal_the_database_through_the_replica_router():
    """With the router, the oracle reads wherever read-your-writes allows (the streaming standby
    once it has replayed this thread's writes) and cache misses fill from the primary."""
    from django_scaleops.testing.routing import record_reads
    from tests.router_helpers import fresh_routing, router_settings, wait_for_replay

    with router_settings(), fresh_routing():
        # First a read that must reach the standby: proof that this set-up exercises the router.
        Doc.objects.create(title="seen on the standby")
        # The write position is read at the first read after the write: WAL the server writes
        # meanwhile (autovacuum after the earlier tests' churn) can put it past the standby once.
        for _ in range(5):
            wait_for_replay()
            with record_reads() as log:
                assert [d.title for d in Doc.objects.all()] == ["seen on the standby"]
            if log.aliases == ["replica"]:
                break
        assert log.aliases == ["replica"]
        run_state_machine_as_test(CachedReadsThroughTheRouter, settings=FUZZ)


class CachedReadsThroughTheRouter(CachedReads):
    @rule()
    def let_the_standby_catch_up(self) -> None:
        """Reads after this may go to the standby: it has replayed every write so far."""
        from tests.router_helpers import wait_for_replay

        wait_for_replay()
