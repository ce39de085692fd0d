"""Partition pruning you can see: every query of every example endpoint, run through ``EXPLAIN``.

Each endpoint is driven with the test client while every query is captured (on every alias); each
SELECT, UPDATE and DELETE is then explained (``EXPLAIN (FORMAT JSON)``, with its own parameters)
and the partitions of the chat tables in its plan are counted. Lookups by id touch one partition
(the id carries ``created_at``: ``TimeOrderedIdField``); lists bounded by time touch the months
they cover; the few queries that must touch more say why.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management import call_command
from django.db import IntegrityError, connection, connections, transaction
from django.test import Client
from django.test.utils import isolate_apps
from django.utils import timezone
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from django_scaleops.partitioning import intervals
from django_scaleops.partitioning.ids import (
    LOW_BITS,
    MAX_WINDOWS,
    TIME_ORDERED_FLOOR,
    created_at_window,
    milliseconds,
    time_ordered_id,
    windows_of,
)
from django_scaleops.partitioning.introspection import partitions
from example_project.chat.models import Conversation, ConversationMessage, Message, MessageRecipient

pytestmark = [pytest.mark.django_db]

CHAT_TABLES = ("chat_conversation", "chat_message", "chat_conversationmessage", "chat_messagerecipient")
MONTHS_BACK = 6  # months of partitions made behind the current one (each costs DDL)


@dataclass(frozen=True)
class Query:
    alias: str
    sql: str
    params: Any


@contextmanager
def captured() -> Iterator[list[Query]]:
    """Every statement run on any alias meanwhile, with its parameters."""
    seen: list[Query] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        seen.append(Query(context["connection"].alias, sql, params))
        return execute(sql, params, many, context)

    with ExitStack() as stack:
        for conn in connections.all():
            stack.enter_context(conn.execute_wrapper(wrapper))
        yield seen


def _parents() -> dict[str, str]:
    """Partition name → its partitioned parent, for the chat tables."""
    found = {}
    for table in CHAT_TABLES:
        for part in partitions(connection, table):
            found[part.name] = table
    return found


def _relations(node: dict[str, Any]) -> Iterator[str]:
    if "Relation Name" in node:
        yield node["Relation Name"]
    for child in node.get("Plans", []):
        yield from _relations(child)


def partitions_touched(query: Query, parents: dict[str, str]) -> dict[str, int]:
    """How many partitions of each chat table the plan of ``query`` visits."""
    with connections[query.alias].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {query.sql}", query.params)
        raw = cursor.fetchone()[0]
    plan = json.loads(raw) if isinstance(raw, str) else raw
    touched = Counter(parents[name] for name in set(_relations(plan[0]["Plan"])) if name in parents)
    return dict(touched)


def explained(queries: list[Query]) -> list[dict[str, int]]:
    """Per SELECT/UPDATE/DELETE that touches a chat table, in order: partitions per table."""
    parents = _parents()
    result = []
    for query in queries:
        if not query.sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
            continue
        touched = partitions_touched(query, parents)
        if touched:
            result.append(touched)
    return result


def utc_months_between(start: datetime, end: datetime) -> int:
    """Months from the one holding ``start`` to the one holding ``end``, both included."""
    return (end.year - start.year) * 12 + end.month - start.month + 1


def count_partitions(table: str, *, ending_after: datetime | None = None, starting_by: datetime | None = None) -> int:
    """Non-default partitions of ``table`` whose range reaches past ``ending_after`` and starts by
    ``starting_by`` (as the catalog lists them)."""
    return sum(
        1
        for p in partitions(connection, table)
        if not p.is_default
        and (ending_after is None or p.end is None or p.end > ending_after)
        and (starting_by is None or p.start is None or p.start <= starting_by)
    )


@pytest.fixture
def now() -> datetime:
    return timezone.now()


@pytest.fixture
def months(now: datetime) -> datetime:
    """Monthly partitions of every chat table from MONTHS_BACK months ago to three ahead."""
    since = intervals.add(intervals.floor(now, "month"), "month", -MONTHS_BACK)
    call_command("ensure_partitions", since=since.isoformat(), stdout=StringIO())
    return since


@pytest.fixture
def chat(months: datetime, now: datetime) -> dict[str, Any]:
    """A conversation three months old, with a message from two months ago already in it."""
    User = get_user_model()
    alice, bob, carol = (User.objects.create(username=name) for name in ("alice", "bob", "carol"))
    started = now - timedelta(days=92)
    conversation = Conversation.objects.create(title="Launch", created_by=alice, created_at=started)
    conversation.participants.set([alice, bob, carol])
    older_at = now - timedelta(days=61)
    older = Message.objects.create(sender=bob, body="earlier", created_at=older_at)
    ConversationMessage.objects.create(conversation=conversation, message=older)
    MessageRecipient.objects.bulk_create(MessageRecipient(message=older, recipient=u) for u in (alice, carol))
    cache.clear()
    return {"conversation": conversation, "alice": alice, "older": older}


def run_endpoint(client: Client, method: str, path: str, **kwargs: Any) -> tuple[Any, list[dict[str, int]]]:
    cache.clear()  # the cold path: what a cache miss costs
    with captured() as queries:
        response = getattr(client, method)(path, **kwargs)
    return response, explained(queries)


def test_every_example_endpoint_touches_the_partitions_it_needs(client: Client, chat: dict[str, Any], now: datetime):
    conversation: Conversation = chat["conversation"]
    conv_path = f"/api/conversations/{conversation.pk}"
    # Partitions from the conversation's month on (its messages are never older), default included:
    # with no upper bound, rows beyond the last partition could sit in the default one.
    since_conversation = count_partitions("chat_conversationmessage", ending_after=conversation.created_at) + 1

    # The list: the most recently active conversations, whatever month they started in. Every
    # partition up to now must be visited (ordering by last_message_at says nothing of created_at);
    # the premade future ones are skipped, the default one cannot be (it may hold any past month).
    response, plans = run_endpoint(client, "get", "/api/conversations/")
    assert response.status_code == 200
    up_to_now = count_partitions("chat_conversation", starting_by=now)
    assert up_to_now == MONTHS_BACK + 1  # the test's months, so the figure below means something
    assert plans == [{"chat_conversation": up_to_now + 1}]

    # Detail: the conversation by id (one partition), its participants (not partitioned) and its
    # message count (from the conversation's month on).
    response, plans = run_endpoint(client, "get", f"{conv_path}/")
    assert response.status_code == 200
    assert plans == [{"chat_conversation": 1}, {"chat_conversationmessage": since_conversation}]

    # Posting: the conversation by id, then the UPDATE of last_message_at by id: one partition each.
    response, plans = run_endpoint(
        client,
        "post",
        f"{conv_path}/messages/",
        data={"sender": chat["alice"].pk, "body": "hello"},
        content_type="application/json",
    )
    assert response.status_code == 201
    new_id = response.json()["id"]
    assert (new_id >> LOW_BITS) == milliseconds(datetime.fromisoformat(response.json()["created_at"]))
    assert plans == [{"chat_conversation": 1}, {"chat_conversation": 1}]

    # A page: the conversation by id, the page of placements (from the conversation's month on:
    # the newest first, so PostgreSQL reads the newest partitions and stops), then the page's
    # messages by id: the two months they were sent in, nothing else.
    response, plans = run_endpoint(client, "get", f"{conv_path}/messages/?limit=10")
    assert response.status_code == 200
    page = response.json()["messages"]
    assert [m["id"] for m in page] == [new_id, chat["older"].pk]
    page_months = utc_months_between(chat["older"].created_at, now)
    assert page_months == 3  # 61 days apart: the months of both and the one between
    assert plans == [
        {"chat_conversation": 1},
        {"chat_conversationmessage": since_conversation},
        {"chat_message": 2},  # the two messages' months, not the one between
    ]

    # Keyset paging back in time: placements up to ``before`` only.
    before = chat["older"].created_at + timedelta(seconds=1)
    response, plans = run_endpoint(client, "get", f"{conv_path}/messages/", data={"before": before.isoformat()})
    assert response.status_code == 200
    assert [m["id"] for m in response.json()["messages"]] == [chat["older"].pk]
    placements_months = utc_months_between(conversation.created_at, before)
    assert plans == [{"chat_conversation": 1}, {"chat_conversationmessage": placements_months}, {"chat_message": 1}]

    # Delivery figures: the message by id, its recipients by (message, created_at): one each.
    response, plans = run_endpoint(client, "get", f"/api/messages/{chat['older'].pk}/delivery/")
    assert response.json()["recipients"] == 2
    assert plans == [{"chat_message": 1}, {"chat_messagerecipient": 1}]

    # An id that does not exist still carries a time: one partition, then 404.
    missing = time_ordered_id(now - timedelta(days=40), low=12345)
    response, plans = run_endpoint(client, "get", f"/api/messages/{missing}/delivery/")
    assert response.status_code == 404
    assert plans == [{"chat_message": 1}]

    # An id below the floor carries no time (a row from before the switch, an explicit small id):
    # every partition is checked, as before: found, never missed.
    response, plans = run_endpoint(client, "get", "/api/messages/5/delivery/")
    assert response.status_code == 404
    assert plans == [{"chat_message": count_partitions("chat_message") + 1}]

    # The slow-query demo touches no table.
    response, plans = run_endpoint(client, "get", "/api/demo/slow-query/", data={"ms": "1"})
    assert response.status_code == 200
    assert plans == []


def test_home_page_queries_say_why_they_touch_every_partition(client: Client, chat: dict[str, Any]):
    # The newest conversation by activity and the newest message by id: no time is known in
    # advance, so every partition's index is read once (a merge of the newest rows, LIMIT 1).
    response, plans = run_endpoint(client, "get", "/")
    assert response.status_code == 200
    assert plans == [
        {"chat_conversation": count_partitions("chat_conversation") + 1},
        {"chat_message": count_partitions("chat_message") + 1},
    ]


def test_lookups_by_id_without_the_scheme_would_touch_every_partition(chat: dict[str, Any]):
    """The baseline the derived bound replaces: the same lookup by an untimed id column."""
    message: Message = chat["older"]
    with captured() as queries:
        list(Message.objects.filter(body=message.body, id=message.pk))
        list(Message.objects.extra(where=["id = %s"], params=[message.pk]))  # no lookup: no bound
    bounded, unbounded = explained(queries)
    assert bounded == {"chat_message": 1}
    assert unbounded == {"chat_message": count_partitions("chat_message") + 1}


# ---- the id scheme ---------------------------------------------------------------------------


def test_window_arithmetic_round_trips():
    moment = datetime(2026, 3, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    pk = time_ordered_id(moment, low=(1 << LOW_BITS) + 7)  # the low part wraps
    assert pk & ((1 << LOW_BITS) - 1) == 7
    start, end = created_at_window(pk) or (None, None)
    assert start == datetime(2026, 3, 31, 23, 59, 59, 999_000, tzinfo=UTC) and end == datetime(2026, 4, 1, tzinfo=UTC)
    assert created_at_window(TIME_ORDERED_FLOOR - 1) is None
    assert windows_of([pk, 5]) is None  # one untimed id: no bound at all
    adjacent = [time_ordered_id(moment + timedelta(milliseconds=n)) for n in (0, 1, 3)]
    windows = windows_of(adjacent) or []
    assert [(a.isoformat(), b.isoformat()) for a, b in windows] == [
        ("2026-03-31T23:59:59.999000+00:00", "2026-04-01T00:00:00.001000+00:00"),
        ("2026-04-01T00:00:00.002000+00:00", "2026-04-01T00:00:00.003000+00:00"),
    ]
    many = [time_ordered_id(moment + timedelta(seconds=n)) for n in range(MAX_WINDOWS + 1)]
    first = moment.replace(microsecond=999_000)
    assert windows_of(many) == [(first, first + timedelta(seconds=MAX_WINDOWS, milliseconds=1))]  # one window


def test_explicit_ids_that_break_the_scheme_are_refused_on_every_path(chat: dict[str, Any], now: datetime):
    sender = chat["alice"]
    wrong = time_ordered_id(now - timedelta(days=400))
    with pytest.raises(IntegrityError, match="chat_message_id_time_ordered"), transaction.atomic():
        Message.objects.create(id=wrong, sender=sender, body="x", created_at=now)
    with pytest.raises(IntegrityError, match="chat_message_id_time_ordered"), transaction.atomic():
        Message.objects.bulk_create([Message(id=wrong, sender=sender, body="x", created_at=now)])
    with (
        pytest.raises(IntegrityError, match="chat_message_id_time_ordered"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "INSERT INTO chat_message (id, sender_id, body, created_at) VALUES (%s, %s, 'x', %s)",
            [wrong, sender.pk, now],
        )
    # Changing created_at beyond its millisecond would break the id: refused as well.
    with pytest.raises(IntegrityError, match="chat_message_id_time_ordered"), transaction.atomic():
        Message.objects.filter(pk=chat["older"].pk).update(created_at=now)


def test_explicit_ids_that_follow_the_scheme_or_carry_no_time_are_found(chat: dict[str, Any], now: datetime):
    sender = chat["alice"]
    moment = now - timedelta(days=200)
    restored = Message.objects.create(id=time_ordered_id(moment, low=99), sender=sender, body="kept", created_at=moment)
    legacy = Message.objects.create(id=4242, sender=sender, body="legacy", created_at=moment)
    assert Message.objects.get(pk=restored.pk).body == "kept"
    assert Message.objects.get(pk=legacy.pk).body == "legacy"
    assert set(Message.objects.filter(id__in=[restored.pk, legacy.pk]).values_list("body", flat=True)) == {
        "kept",
        "legacy",
    }
    # exclude() keeps its meaning: the bound is implied by the id, so NOT(id AND bound) = NOT id.
    assert not Message.objects.filter(body__in=["kept", "legacy"]).exclude(pk=restored.pk).exclude(pk=legacy.pk)


def test_id_in_with_many_milliseconds_still_finds_every_row(chat: dict[str, Any], now: datetime):
    sender = chat["alice"]
    made = Message.objects.bulk_create(
        Message(sender=sender, body=f"m{n}", created_at=now - timedelta(days=20 * n, seconds=n))
        for n in range(MAX_WINDOWS + 5)
    )
    pks = [m.pk for m in made]
    assert sorted(Message.objects.filter(id__in=pks).values_list("pk", flat=True)) == sorted(pks)
    few = pks[:3]
    with captured() as queries:
        found = sorted(Message.objects.filter(id__in=few).values_list("pk", flat=True))
    assert found == sorted(few)
    (plan,) = explained(queries)
    assert plan == {"chat_message": len({intervals.floor(m.created_at, "month") for m in made[:3]})}


def test_deletes_and_saves_by_id_prune_too(chat: dict[str, Any]):
    message: Message = chat["older"]
    with captured() as queries:
        message.body = "edited"
        message.save(update_fields=["body"])
        message.refresh_from_db()
    assert message.body == "edited"
    assert explained(queries) == [{"chat_message": 1}, {"chat_message": 1}]
    with captured() as queries:
        Message.objects.filter(pk=message.pk).delete()
    assert not Message.objects.filter(pk=message.pk).exists()
    message_plans = [p for p in explained(queries) if "chat_message" in p]
    assert message_plans and all(p == {"chat_message": 1} for p in message_plans)


# ---- property: every insert path, any month ------------------------------------------------------

INSERT_PATHS = ("save", "bulk_create", "batch_create", "raw_sql")


def insert(path: str, sender_id: int, body: str, created_at: datetime) -> int:
    if path == "save":
        row = Message(sender_id=sender_id, body=body, created_at=created_at)
        row.save()
        return int(row.pk)
    if path == "bulk_create":
        return int(Message.objects.bulk_create([Message(sender_id=sender_id, body=body, created_at=created_at)])[0].pk)
    if path == "batch_create":  # COPY: nothing comes back, the database fills the id
        Message.objects.batch_create([Message(sender_id=sender_id, body=body, created_at=created_at)])
        return int(Message.objects.filter(body=body, created_at=created_at).values_list("pk", flat=True).get())
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO chat_message (sender_id, body, created_at) VALUES (%s, %s, %s) RETURNING id",
            [sender_id, body, created_at],
        )
        return int(cursor.fetchone()[0])


@pytest.fixture
def fixed_months() -> None:
    """chat_message partitions for 2024-01 to 2026-12; other months go to the default partition."""
    call_command(
        "ensure_partitions", model=["chat.Message"], since="2024-01-01T00:00:00+00:00", now="2026-09-15T00:00:00+00:00",
        stdout=StringIO(),
    )  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    created_at=st.datetimes(min_value=datetime(2023, 6, 1), max_value=datetime(2027, 6, 30), timezones=st.just(UTC)),
    path=st.sampled_from(INSERT_PATHS),
    tag=st.uuids(),
)
def test_any_row_from_any_insert_path_is_found_by_id_in_one_partition(
    fixed_months: None, created_at: datetime, path: str, tag: Any
):
    sender = get_user_model().objects.get_or_create(username="prop-sender")[0]
    body = f"{path} {tag}"
    pk = insert(path, sender.pk, body, created_at)
    note(f"id {pk} for {created_at.isoformat()} via {path}")
    assert pk >= TIME_ORDERED_FLOOR
    assert pk >> LOW_BITS == milliseconds(created_at)
    with captured() as queries:
        found = Message.objects.get(id=pk)
    assert (found.body, found.created_at) == (body, created_at)
    assert explained(queries) == [{"chat_message": 1}]
    assert Message.objects.filter(pk__in=[pk, pk + 1]).values_list("pk", flat=True).get() == pk


# ---- checks ------------------------------------------------------------------------------------


def test_a_model_without_the_database_side_is_reported():
    from django_scaleops.partitioning.checks import check_partitioned_models

    def ids(databases: list[str] | None) -> list[str]:
        return [
            m.id for m in check_partitioned_models(databases=databases) if m.id in ("scaleops.E406", "scaleops.E407")
        ]

    assert ids(["default"]) == []
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE chat_message DROP CONSTRAINT chat_message_id_time_ordered")
    assert ids(None) == []  # the database is only asked with --database
    reported = [m for m in check_partitioned_models(databases=["default"]) if m.id == "scaleops.E407"]
    assert [m.obj for m in reported] == [Message]
    assert "UseTimeOrderedIds" in (reported[0].hint or "")


@isolate_apps("tests.partitionapp")
def test_a_key_that_is_not_a_datetime_field_is_reported():
    from django.db import models

    from django_scaleops.partitioning.checks import _time_ordered_ids
    from django_scaleops.partitioning.ids import TimeOrderedIdField

    class Stamped(models.Model):
        id = TimeOrderedIdField(key="title")
        title = models.CharField(max_length=10)

        class Meta:
            app_label = "partitionapp"

        def __str__(self) -> str:
            return self.title

    (message,) = _time_ordered_ids(Stamped, None)
    assert message.id == "scaleops.E406" and "'title'" in message.msg


# ---- the migration -------------------------------------------------------------------------------


def test_switching_a_table_with_rows_keeps_them_and_switching_back_continues_after_them():
    from django_scaleops.partitioning.ids import install_sql, uninstall_sql

    moment = datetime(2026, 1, 10, 12, tzinfo=UTC)

    def add(name: str) -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO partitionapp_event (name, created_at) VALUES (%s, %s) RETURNING id", [name, moment]
            )
            return int(cursor.fetchone()[0])

    def names_by_id(pk: int) -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT name FROM partitionapp_event WHERE id = %s", [pk])
            return [row[0] for row in cursor.fetchall()]

    before = add("before")
    assert before < TIME_ORDERED_FLOOR
    with connection.cursor() as cursor:
        for statement in install_sql("partitionapp_event", "created_at"):
            cursor.execute(statement)
        for statement in install_sql("partitionapp_event", "created_at"):  # idempotent
            cursor.execute(statement)
    during = add("during")
    assert during >> LOW_BITS == milliseconds(moment)
    assert names_by_id(before) == ["before"] and names_by_id(during) == ["during"]
    with connection.cursor() as cursor:
        for statement in uninstall_sql("partitionapp_event"):
            cursor.execute(statement)
    after = add("after")
    assert after > during  # the identity continues after the highest id
    assert names_by_id(after) == ["after"]


def test_the_operation_changes_the_field_and_makemigrations_sees_nothing_left():
    from django.db.migrations.loader import MigrationLoader
    from django.db.migrations.state import ProjectState

    from django_scaleops.partitioning import TimeOrderedIdField, UseTimeOrderedIds

    operation = UseTimeOrderedIds("Message")
    assert operation.deconstruct() == ("UseTimeOrderedIds", ["Message"], {})
    assert UseTimeOrderedIds("Message", key="sent_at").deconstruct()[2] == {"key": "sent_at"}
    state: ProjectState = MigrationLoader(connection).project_state(("chat", "0001_initial"))
    assert not isinstance(state.models["chat", "message"].fields["id"], TimeOrderedIdField)
    operation.state_forwards("chat", state)
    assert isinstance(state.models["chat", "message"].fields["id"], TimeOrderedIdField)
    out = StringIO()
    call_command("makemigrations", "chat", check=True, dry_run=True, stdout=out)
    assert "No changes detected" in out.getvalue()


def test_an_existing_install_migrates_to_time_ordered_ids():
    """An upgrade: tables made by chat 0001 exist without the CHECK. ``migrate`` runs E407 first and
    must still apply 0002 (the check waits until no migration of the app is left to apply)."""
    import os
    import subprocess
    import sys
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    scratch = f"scaleops_upgrade_{os.getpid()}"
    url = urlsplit(os.environ["DATABASE_URL"])
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{scratch}"')
        try:
            env = {**os.environ, "DATABASE_URL": urlunsplit(url._replace(path=f"/{scratch}"))}
            manage = [sys.executable, "manage.py"]
            for step in (["migrate", "chat", "0001", "-v0"], ["migrate", "-v0"], ["check", "--database", "default"]):
                done = subprocess.run([*manage, *step], env=env, capture_output=True, text=True, timeout=180)
                assert done.returncode == 0, (step, done.stderr[-2000:])
            with psycopg.connect(env["DATABASE_URL"]) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_constraint"
                    " WHERE conrelid = 'chat_message'::regclass AND conname = 'chat_message_id_time_ordered'"
                ).fetchone()
            assert row == (1,)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
