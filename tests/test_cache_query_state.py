"""Querysets built alike share one compile (``cache.query_state``), and only when Django would send
them the same SQL.

A queryset built for every read is keyed by its compiled SQL; within a process that compile is
memoised by a digest of the queryset's state. The danger is two querysets whose states digest
alike but compile apart (values that print or compare alike, something read at compile time from
outside the state): one would be served the other's rows. The differential test below builds
pairs from values chosen to look alike and holds the digest against the compiled key; the others
try what a user could hold in a queryset that compiles by what is outside it.
"""

from __future__ import annotations

import datetime
import decimal
import json
import sys
import types
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.db.models import Case, CharField, Count, Exists, F, OuterRef, Q, Subquery, Value, When
from django.db.models.functions import Lower
from django.db.models.sql.compiler import SQLCompiler
from django.test import override_settings
from django.utils import timezone
from django.utils.functional import lazy
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from django_scaleops.cache import keys
from django_scaleops.cache.query_state import state_digest
from tests.cacheapp.helpers import clean_cache  # noqa: F401
from tests.cacheapp.models import Author, Book, Doc, DocProxy, DocQuerySet

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_cache")]

# Alike to ==, hash() or str(): 1 == 1.0 == True == Decimal("1"); "1" prints as 1.
LOOKALIKES: list[Any] = [
    1,
    1.0,
    True,
    "1",
    "1.0",
    decimal.Decimal("1"),
    decimal.Decimal("1.0"),
    decimal.Decimal("1.00"),
    0,
    0.0,
    -0.0,
    False,
    "",
]
INSTANT = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)
MOMENTS = [INSTANT, INSTANT.astimezone(ZoneInfo("Europe/Paris")), INSTANT.astimezone(ZoneInfo("Asia/Tokyo"))]
lookalikes = st.sampled_from(LOOKALIKES)

# Each recipe is a list of steps applied to a fresh queryset, so a recipe builds equal querysets
# as often as it is run (what a view does on every request).
STEPS: dict[str, Any] = {
    "title": lambda qs, v: qs.filter(title=v),
    "not title": lambda qs, v: qs.exclude(title=v),
    "title or amount": lambda qs, v: qs.filter(Q(title=v) | Q(amount=v)),
    "amount": lambda qs, v: qs.filter(amount=v),
    "amount in": lambda qs, v: qs.filter(amount__in=[v, 2]),
    "meta n": lambda qs, v: qs.filter(meta__n=v),
    "meta contains": lambda qs, v: qs.filter(meta__contains={"n": v}),
    "value": lambda qs, v: qs.annotate(tag=Value(v)).filter(tag=v),
    "at": lambda qs, v: qs.filter(at__lt=v),
    "at date": lambda qs, v: qs.filter(at__date=v.date()),
    "author name": lambda qs, v: qs.filter(author__name=v),
    "author": lambda qs, v: qs.filter(author=v),
    "book pages": lambda qs, v: qs.filter(author__books__pages=v),
    "has books": lambda qs, v: qs.filter(Exists(Book.objects.filter(author=OuterRef("author"), pages__gte=v))),
    "in books": lambda qs, v: qs.filter(author__in=Book.objects.filter(pages=v).values("author")),
    "first title": lambda qs, v: qs.annotate(
        first=Subquery(Book.objects.filter(author=OuterRef("author"), title=v).values("title")[:1])
    ),
    "f": lambda qs, v: qs.filter(amount__gt=F("author__id") + v),
    "lower": lambda qs, v: qs.annotate(low=Lower("title")).filter(low=v),
    "count": lambda qs, v: qs.annotate(n=Count("author__books")).filter(n__gte=v),
    "order": lambda qs, v: qs.order_by("-amount" if v else "amount", "pk"),
    "slice": lambda qs, v: qs.order_by("pk")[: int(v) + 1],
    "values": lambda qs, v: qs.values("pk", "title") if v else qs.values("pk"),
    "values_list": lambda qs, v: qs.values_list("pk", flat=True) if v else qs.values_list("pk"),
    "proxy": lambda qs, v: DocProxy.objects.filter(pk__in=qs.values("pk")) if v else qs,
}
NUMBERS = [v for v in LOOKALIKES if not isinstance(v, str)]
POOLS: dict[str, list[Any]] = {
    "title or amount": NUMBERS,
    "amount": NUMBERS,
    "amount in": NUMBERS,
    "count": NUMBERS,
    "slice": NUMBERS,
    "book pages": NUMBERS,
    "has books": NUMBERS,
    "in books": NUMBERS,
    "f": [v for v in NUMBERS if not isinstance(v, bool)],  # integer + boolean does not compile
    "meta n": [v for v in LOOKALIKES if not isinstance(v, decimal.Decimal)],  # JSON has no decimals
    "meta contains": [v for v in LOOKALIKES if not isinstance(v, decimal.Decimal)],
    "at": MOMENTS,
    "at date": MOMENTS,
    "author": ["first", "second"],  # instances, made by build()
}


def values_for(step: str) -> st.SearchStrategy[Any]:
    return st.sampled_from(POOLS.get(step, LOOKALIKES))


@st.composite
def variants(draw: st.DrawFn) -> list[list[tuple[str, Any]]]:
    """One recipe's steps with two to four draws of their values: the same query built with
    values that look alike, where a lossy digest would join two of them."""
    steps = draw(st.lists(st.sampled_from(sorted(STEPS)), min_size=1, max_size=3))
    count = draw(st.integers(2, 4))
    return [[(step, draw(values_for(step))) for step in steps] for _ in range(count)]


def build(recipe: list[tuple[str, Any]], authors: dict[str, Author]) -> Any:
    queryset: Any = Doc.objects.all()
    for step, value in recipe:
        if step == "author":
            value = authors[value]
        try:
            queryset = STEPS[step](queryset, value)
        except TypeError:  # e.g. a filter after a slice: the recipe skips that step, every time
            continue
    return queryset


def compiled_key(queryset: Any) -> bytes | None:
    """The key the cache builds from the compiled SQL (what the memo stands in for)."""
    from django.core.exceptions import EmptyResultSet

    try:
        sql, params = queryset.query.get_compiler(using="default").as_sql()
    except EmptyResultSet:
        return None
    return keys._query_digest(queryset, "default", sql, params)


def authors() -> dict[str, Author]:
    first = Author.objects.create(name="1")
    second = Author.objects.create(name="1.0")
    Book.objects.create(title="1", pages=1, author=first)
    Book.objects.create(title="True", pages=0, author=second)
    return {"first": first, "second": second}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(variants(), min_size=1, max_size=3))
def test_querysets_share_a_digest_only_when_they_compile_to_one_key(groups: list[list[list[tuple[str, Any]]]]):
    made = authors()
    try:
        seen: dict[bytes, tuple[Any, bytes | None]] = {}
        for recipe in [recipe for group in groups for recipe in group]:
            queryset = build(recipe, made)
            digest = state_digest(queryset)  # before compiling, as query_key takes it
            again = state_digest(build(recipe, made))
            note(f"{recipe}: {digest!r}")
            # Built the same way twice: one digest, or the memo would never help.
            assert digest is not None and digest == again
            key = compiled_key(queryset)
            if digest in seen:
                other, other_key = seen[digest]
                assert key == other_key, f"{other} and {recipe} share a digest but compile apart"
            seen[digest] = (recipe, key)
    finally:
        Book.objects.all().delete()
        Author.objects.all().delete()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(variants())
def test_cached_reads_built_per_read_answer_what_the_database_answers(reads: list[list[tuple[str, Any]]]):
    """The database as the oracle: each read through the memo equals the same read uncached."""
    made = authors()
    for title, amount, meta in (("1", "1", 1), ("1.0", "1.0", 1.0), ("True", "0", True), ("", "2", "1")):
        Doc.objects.create(title=title, amount=decimal.Decimal(amount), meta={"n": meta}, author=made["first"])
    Doc.objects.create(title="late", at=INSTANT, author=made["second"])
    try:
        for recipe in reads + reads:  # each twice: the second read of a recipe is the memo's
            cached = build(recipe, made)
            fresh = build(recipe, made)
            rows = cached.cached(60)
            assert [plain(r) for r in rows] == [plain(r) for r in fresh], recipe
    finally:
        Doc.objects.all().delete()
        Book.objects.all().delete()
        Author.objects.all().delete()


def plain(row: Any) -> Any:
    if isinstance(row, Doc):
        return (type(row).__name__, row.pk, row.title, row.amount, getattr(row, "first", None))
    return row


# ---- what compiles by something outside the queryset's state


TENANT = {"name": "a"}


def current_tenant() -> str:
    return TENANT["name"]


class TenantTitle(Value):
    """An expression of the user's that reads a global while it compiles."""

    def __init__(self) -> None:
        super().__init__("")

    def as_sql(self, compiler: Any, connection: Any) -> Any:
        return "%s", [current_tenant()]


class VouchedValue(Value):
    scaleops_compiles_from_state = True


class UnvouchedChild(VouchedValue):
    """Inherits the attribute, not the vouch: the child may compile otherwise."""


@pytest.fixture
def tenants_docs() -> None:
    Doc.objects.create(title="a")
    Doc.objects.create(title="b")


def each_tenant_reads_its_own(annotated: Callable[[], DocQuerySet]) -> None:
    """Switch tenants a, b, a, b: each cached read of the docs titled like the ``tenant``
    annotation, built afresh for that tenant, gives that tenant's doc only."""
    try:
        for name in ("a", "b", "a", "b"):
            TENANT["name"] = name
            queryset = annotated().filter(title=F("tenant"))
            assert [d.title for d in queryset.cached(60)] == [name]
    finally:
        TENANT["name"] = "a"


@pytest.mark.usefixtures("tenants_docs")
def test_a_lazy_value_is_read_again_for_every_query():
    """A lazy string (a translation, a tenant) in a ``Value`` gives its text when the SQL is compiled."""
    tenant_title = lazy(current_tenant, str)
    each_tenant_reads_its_own(lambda: Doc.objects.annotate(tenant=Value(tenant_title(), output_field=CharField())))


@pytest.mark.usefixtures("tenants_docs")
def test_an_expression_of_yours_is_compiled_for_every_query():
    each_tenant_reads_its_own(lambda: Doc.objects.annotate(tenant=TenantTitle()))


@pytest.mark.usefixtures("tenants_docs")
@pytest.mark.parametrize(
    "module",
    ["datetime_helpers", "uuid_tools", "decimal_fields", "zoneinfo_utils", "builtins_extra", "psycopg.types.ranges"],
)
def test_a_module_named_like_a_trusted_one_is_not_trusted(module: str, monkeypatch: pytest.MonkeyPatch):
    """Trust goes by module, not by name prefix: a project's ``datetime_helpers`` is not ``datetime``."""
    kind = type("TenantTitle", (TenantTitle,), {"__module__": module})
    monkeypatch.setitem(sys.modules, module, types.ModuleType(module))
    monkeypatch.setattr(sys.modules[module], "TenantTitle", kind, raising=False)
    assert state_digest(Doc.objects.annotate(tenant=kind())) is None
    each_tenant_reads_its_own(lambda: Doc.objects.annotate(tenant=kind()))


def test_a_class_vouches_for_itself_only():
    assert state_digest(Doc.objects.annotate(x=VouchedValue(1))) is not None
    assert state_digest(Doc.objects.annotate(x=UnvouchedChild(1))) is None
    assert state_digest(Doc.objects.annotate(x=TenantTitle())) is None


def test_a_queryset_held_by_an_expression_is_never_evaluated(django_assert_num_queries):
    inner = Book.objects.filter(pages=1)
    with django_assert_num_queries(0):
        assert state_digest(Doc.objects.filter(Exists(inner.filter(author=OuterRef("author"))))) is not None
        assert state_digest(Doc.objects.filter(author__in=Subquery(inner.values("author")))) is not None
    assert inner._result_cache is None
    # When() keeps the arguments it was given (its _constructor_args), queryset included.
    flagged = Case(When(author__in=inner.values("author"), then=Value(1)), default=Value(0))
    with django_assert_num_queries(0):
        assert state_digest(Doc.objects.annotate(flag=flagged).filter(flag=1)) is not None
    assert inner._result_cache is None


def test_a_model_instance_is_named_by_its_columns():
    first, second = Author.objects.create(name="x"), Author.objects.create(name="x")
    Doc.objects.create(title="one", author=first)
    Doc.objects.create(title="two", author=second)
    for author, title in ((first, "one"), (second, "two"), (first, "one")):
        assert [d.title for d in Doc.objects.filter(author=author).cached(60)] == [title]
    assert state_digest(Doc.objects.filter(author=first)) != state_digest(Doc.objects.filter(author=second))
    assert state_digest(Doc.objects.filter(author=first)) == state_digest(
        Doc.objects.filter(author=Author.objects.get(pk=first.pk))
    )


def test_a_queryset_built_per_read_in_two_time_zones_gets_each_zones_rows():
    Doc.objects.create(title="late", at=datetime.datetime(2026, 1, 1, 23, 30, tzinfo=datetime.UTC))
    for zone in ("UTC", "Asia/Tokyo", "UTC", "Asia/Tokyo"):  # UTC+9: the row falls on 2 January
        with timezone.override(zone):
            built: Any = Doc.objects.filter(at__date=datetime.date(2026, 1, 1)).values_list("title", flat=True)
            assert built.cached(60) == (["late"] if zone == "UTC" else []), zone


class CountCompiles:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = SQLCompiler.as_sql

        def counted(compiler: SQLCompiler, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(compiler, *args, **kwargs)

        monkeypatch.setattr(SQLCompiler, "as_sql", counted)


def test_a_queryset_built_alike_on_every_read_is_compiled_once(monkeypatch):
    Doc.objects.create(title="a")
    compiles = CountCompiles(monkeypatch)
    for _ in range(3):
        assert [d.title for d in Doc.objects.filter(title="a").order_by("pk").cached(60)] == ["a"]
    assert compiles.count == 2  # the first read's key, and its fill from the database


@override_settings(SCALEOPS_CACHE_COMPILED_QUERIES=0)
def test_with_the_memo_off_every_read_compiles(monkeypatch):
    Doc.objects.create(title="a")
    compiles = CountCompiles(monkeypatch)
    for _ in range(3):
        assert [d.title for d in Doc.objects.filter(title="a").order_by("pk").cached(60)] == ["a"]
    assert compiles.count == 4


@override_settings(SCALEOPS_CACHE_COMPILED_QUERIES=3)
def test_the_memo_is_bounded():
    for n in range(10):
        Doc.objects.create(title=str(n))
    for _ in range(2):
        for n in range(10):
            assert [d.title for d in Doc.objects.filter(title=str(n)).cached(60)] == [str(n)]
            assert len(keys._COMPILED) <= 3


def test_a_write_still_invalidates_a_read_keyed_through_the_memo():
    doc = Doc.objects.create(title="a", amount=1)
    assert [d.amount for d in Doc.objects.filter(title="a").cached(60)] == [1]
    Doc.objects.filter(pk=doc.pk).update(amount=2)
    assert [d.amount for d in Doc.objects.filter(title="a").cached(60)] == [2]
    with connection.cursor() as cursor:
        cursor.execute("UPDATE cacheapp_doc SET amount = 3")
    assert [d.amount for d in Doc.objects.filter(title="a").cached(60)] == [3]


class TenantEncoder(json.JSONEncoder):
    """A JSONField encoder of the user's: it runs while the SQL is compiled."""


def test_a_json_field_with_an_encoder_of_yours_is_compiled_for_every_query(monkeypatch):
    field = Doc._meta.get_field("meta")
    assert state_digest(Doc.objects.filter(meta__contains={"n": 1})) is not None
    monkeypatch.setattr(field, "encoder", DjangoJSONEncoder)
    assert state_digest(Doc.objects.filter(meta__contains={"n": 1})) is not None
    monkeypatch.setattr(field, "encoder", TenantEncoder)
    assert state_digest(Doc.objects.filter(meta__contains={"n": 1})) is None


def test_an_output_field_with_an_encoder_of_yours_is_compiled_for_every_query():
    from django.db.models import JSONField

    plain = Value({"n": 1}, output_field=JSONField())
    assert state_digest(Doc.objects.annotate(x=plain)) is not None
    assert state_digest(Doc.objects.annotate(x=Value({"n": 1}, output_field=JSONField(encoder=TenantEncoder)))) is None


def test_a_process_whose_queries_do_not_come_back_digests_one_read_in_eight(monkeypatch):
    """Each digest costs a third of a compile: where it never finds one, it is mostly skipped,
    and taken for every read again once queries come back."""
    from django_scaleops.cache import query_state

    digested: list[int] = []

    def counted(queryset: Any) -> bytes | None:
        digested.append(1)
        return query_state.state_digest(queryset)

    monkeypatch.setattr(keys, "state_digest", counted)
    Doc.objects.create(title="a")
    for n in range(keys._MemoUse.WINDOW):  # a window of queries that never come back
        assert Doc.objects.filter(title=f"x{n}").cached(60) == []
    assert len(digested) == keys._MemoUse.WINDOW
    digested.clear()
    for n in range(80):
        assert Doc.objects.filter(title=f"y{n}").cached(60) == []
    assert len(digested) == 80 // keys._MemoUse.SAMPLE
    # The same query read again and again: sampled reads find it, and the next window digests all.
    reads = keys._MemoUse.WINDOW * keys._MemoUse.SAMPLE + keys._MemoUse.SAMPLE
    for _ in range(reads):
        assert [d.title for d in Doc.objects.filter(title="a").cached(60)] == ["a"]
    digested.clear()
    for _ in range(20):
        assert [d.title for d in Doc.objects.filter(title="a").cached(60)] == ["a"]
    assert len(digested) == 20
