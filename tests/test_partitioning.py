"""Partitioning against real PostgreSQL: declaration, ensure_partitions, rescue, validation, checks.

Most tests run inside a rolled-back transaction (PostgreSQL DDL is transactional), so the
partitions they create vanish afterwards; the concurrency test commits and cleans up itself.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, connections, models, transaction
from django.test.utils import CaptureQueriesContext, isolate_apps, override_settings

from django_scaleops.partitioning import PartitioningError, get_config, intervals, partitioned_models
from django_scaleops.partitioning.checks import _unique_without_key, check_partitioned_models
from django_scaleops.partitioning.config import PartitionedModel
from django_scaleops.partitioning.identifiers import check_identifier, qn
from django_scaleops.partitioning.introspection import is_partitioned, partitions
from example_project.chat.models import Conversation, Message, MessageRecipient
from tests.partitionapp.models import Event, Reading, Ticket, TicketNote


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def run(command: str, *args: str, **options) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out, **options)
    return out.getvalue()


def names(table: str) -> list[str]:
    return [p.name for p in partitions(connection, table)]


# ---- intervals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "interval", "start", "suffix"),
    [
        (utc(2024, 1, 31, 23, 59), "month", utc(2024, 1, 1), "p2024_01"),
        (utc(2024, 2, 29, 12), "day", utc(2024, 2, 29), "p2024_02_29"),
        (utc(2024, 2, 29, 12), "year", utc(2024, 1, 1), "p2024"),
        (utc(2024, 3, 31, 23, 59), "quarter", utc(2024, 1, 1), "p2024q1"),
        (utc(2024, 12, 31), "quarter", utc(2024, 10, 1), "p2024q4"),
        # ISO weeks: 30 Dec 2024 is a Monday in week 1 of 2025.
        (utc(2025, 1, 1), "week", utc(2024, 12, 30), "p2025w01"),
        # 23:30 on 31 March in New York is already April in UTC: the next quarter.
        (datetime(2024, 3, 31, 23, 30, tzinfo=timezone(timedelta(hours=-4))), "quarter", utc(2024, 4, 1), "p2024q2"),
    ],
)
def test_interval_floor_and_names(moment, interval, start, suffix):
    assert intervals.floor(moment, interval) == start
    assert intervals.suffix(start, interval) == suffix


def test_interval_addition_across_month_ends_and_years():
    assert intervals.add(utc(2024, 1, 1), "month") == utc(2024, 2, 1)
    assert intervals.add(utc(2024, 11, 1), "quarter") == utc(2025, 2, 1)
    assert intervals.add(utc(2024, 12, 1), "month", 3) == utc(2025, 3, 1)
    assert intervals.add(utc(2024, 3, 1), "month", -3) == utc(2023, 12, 1)
    assert intervals.add(utc(2024, 2, 28), "day", 2) == utc(2024, 3, 1)  # leap day in between
    assert intervals.add(utc(2023, 2, 28), "day", 1) == utc(2023, 3, 1)
    with pytest.raises(PartitioningError, match="no time zone"):
        intervals.floor(datetime(2024, 1, 1), "month")
    with pytest.raises(PartitioningError, match="not one of"):
        intervals.floor(utc(2024, 1, 1), "fortnight")


# ---- declaration and migrations -----------------------------------------------------------------


@pytest.mark.django_db
def test_migrations_create_partitioned_tables_with_composite_primary_key():
    for table in ("chat_message", "chat_conversation", "chat_conversationmessage", "chat_messagerecipient"):
        assert is_partitioned(connection, table)
    # The example's migration made the current month and three more, plus the default partition.
    found = partitions(connection, "chat_message")
    assert found[-1].is_default
    assert len([p for p in found if not p.is_default]) == 4
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT array_agg(a.attname ORDER BY a.attname) FROM pg_index i JOIN pg_attribute a"
            " ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = 'chat_message'::regclass AND i.indisprimary"
        )
        assert cursor.fetchone()[0] == ["created_at", "id"]
    # Django still sees one primary key, so get(pk=...) keeps working.
    config = get_config("chat.Message")
    assert (config.interval, config.premake, config.retention) == ("month", 3, 24)


@pytest.mark.django_db(transaction=True)
def test_create_partitioned_model_is_reversible():
    assert is_partitioned(connection, "partitionapp_event")
    call_command("migrate", "partitionapp", "zero", verbosity=0)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('partitionapp_event'), to_regclass('partitionapp_event_default')")
            assert cursor.fetchone() == (None, None)
    finally:
        call_command("migrate", "partitionapp", verbosity=0)
    assert is_partitioned(connection, "partitionapp_event")
    assert names("partitionapp_event") == ["partitionapp_event_default"]


def test_registry_orders_referencing_models_first():
    labels = [c.label for c in partitioned_models()]
    assert labels.index("partitionapp.TicketNote") < labels.index("partitionapp.Ticket")
    assert labels.index("chat.MessageRecipient") < labels.index("chat.Message")
    assert labels.index("chat.ConversationMessage") < labels.index("chat.Message")


@override_settings(SCALEOPS_PARTITION_MODELS={"partitionapp.Event": {"retention": 12, "premake": 6}})
def test_settings_override_model_options():
    config = get_config("partitionapp.Event")
    assert (config.retention, config.premake, config.interval) == (12, 6, "month")


@override_settings(SCALEOPS_PARTITION_MODELS={"partitionapp.Event": {"interval": "hourly"}})
def test_bad_options_are_check_errors():
    errors = [m for m in check_partitioned_models() if m.id == "scaleops.E402"]
    assert len(errors) == 1
    assert "'hourly'" in errors[0].msg


@override_settings(SCALEOPS_PARTITION_MODELS={"chat.Nope": {}}, SCALEOPS_PARTITION_ARCHIVE_STORAGE="missing")
def test_unknown_model_and_storage_are_check_errors():
    ids = sorted(str(m.id) for m in check_partitioned_models())
    assert ids == ["scaleops.E403", "scaleops.E404"]


def test_shipped_models_pass_the_checks():
    assert check_partitioned_models() == []


@isolate_apps("tests.partitionapp")
def test_unique_constraint_without_partition_key_is_flagged():
    class Bad(PartitionedModel):
        code = models.CharField(max_length=10, unique=True)
        other = models.IntegerField()
        created_at = models.DateTimeField()

        class Meta:
            app_label = "partitionapp"
            constraints = [
                models.UniqueConstraint(fields=["other"], name="bad_other"),
                models.UniqueConstraint(fields=["other", "created_at"], name="fine_other"),
            ]

    messages = _unique_without_key(Bad, "created_at")
    assert [m.id for m in messages] == ["scaleops.E401", "scaleops.E401"]
    assert "'code'" in messages[0].msg
    assert "'bad_other'" in messages[1].msg


@pytest.mark.parametrize(
    "name", ['x"; DROP TABLE auth_user; --', "with space", "1starts_with_digit", "", "a" * 64, "ünïcode"]
)
def test_hostile_identifiers_are_refused(name):
    with pytest.raises(PartitioningError, match=r"not allowed|at most 63"):
        check_identifier(name)
    with pytest.raises(PartitioningError):
        qn(name)


@override_settings(SCALEOPS_PARTITION_MODELS={})
def test_hostile_table_name_is_refused_before_any_sql(monkeypatch):
    monkeypatch.setattr(Event._meta, "db_table", 'event"; DROP TABLE auth_user; --')
    with pytest.raises(PartitioningError, match=r"table name .* is not allowed"):
        get_config("partitionapp.Event")


@pytest.mark.django_db
def test_commands_refuse_unknown_models_databases_and_times():
    with pytest.raises(CommandError, match="not a partitioned model"):
        run("ensure_partitions", model=["chat.Nope"])
    with pytest.raises(CommandError, match="not in DATABASES"):
        run("ensure_partitions", database="nope")
    with pytest.raises(CommandError, match="ISO 8601"):
        run("ensure_partitions", now="yesterday")


# ---- ensure_partitions ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_ensure_partitions_creates_current_and_premake_then_does_nothing():
    out = run("ensure_partitions", model=["partitionapp.Event"], now="2024-01-31T23:59:00Z")
    assert "create partitionapp_event_p2024_01 [2024-01-01 00:00, 2024-02-01 00:00) UTC" in out
    assert names("partitionapp_event") == [
        "partitionapp_event_p2024_01",
        "partitionapp_event_p2024_02",
        "partitionapp_event_p2024_03",
        "partitionapp_event_p2024_04",
        "partitionapp_event_default",
    ]
    assert "Created 4 partition(s)" in out
    with CaptureQueriesContext(connection) as queries:
        again = run("ensure_partitions", model=["partitionapp.Event"], now="2024-01-31T23:59:00Z")
    assert "nothing to do" in again
    ddl = [q["sql"] for q in queries if q["sql"].split()[0].upper() in {"CREATE", "ALTER", "DROP", "LOCK"}]
    assert ddl == []
    # Rows land in their month, and the range CHECK proved the attach safe.
    Event.objects.create(name="leap", created_at=utc(2024, 2, 29, 23, 59, 59))
    Event.objects.create(name="edge", created_at=utc(2024, 3, 1))
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, tableoid::regclass::text FROM partitionapp_event ORDER BY name")
        assert cursor.fetchall() == [("edge", "partitionapp_event_p2024_03"), ("leap", "partitionapp_event_p2024_02")]


@pytest.mark.django_db
def test_dry_run_shows_the_plan_and_changes_nothing():
    out = run("ensure_partitions", model=["partitionapp.Reading"], now="2024-03-31T23:30:00-04:00", dry_run=True)
    # In UTC that moment is already in April: the plan starts at the second quarter.
    assert "create partitionapp_reading_p2024q2" in out
    assert "p2024q1" not in out
    assert "Dry run" in out
    assert names("partitionapp_reading") == []


@pytest.mark.django_db
def test_quarterly_model_without_default_partition():
    run("ensure_partitions", model=["partitionapp.Reading"], now="2024-03-31T23:30:00-04:00")
    assert names("partitionapp_reading") == [
        "partitionapp_reading_p2024q2",
        "partitionapp_reading_p2024q3",
        "partitionapp_reading_p2024q4",
    ]
    Reading.objects.create(value=1, created_at=utc(2024, 12, 31, 23, 59))
    with pytest.raises(IntegrityError), transaction.atomic():
        Reading.objects.create(value=2, created_at=utc(2025, 1, 1))  # no partition, no default


@pytest.mark.django_db
def test_since_backfills_and_week_and_day_intervals():
    with override_settings(SCALEOPS_PARTITION_MODELS={"partitionapp.Event": {"interval": "week", "premake": 1}}):
        run("ensure_partitions", model=["partitionapp.Event"], now="2025-01-01T00:00:00Z", since="2024-12-20")
    assert names("partitionapp_event")[:-1] == [
        "partitionapp_event_p2024w51",
        "partitionapp_event_p2024w52",
        "partitionapp_event_p2025w01",
        "partitionapp_event_p2025w02",
    ]


@pytest.fixture
def committed_cleanup():
    yield
    with connection.cursor() as cursor:
        for table in ("partitionapp_event", "partitionapp_reading", "partitionapp_ticket", "partitionapp_ticketnote"):
            for partition in partitions(connection, table):
                if not partition.is_default:
                    cursor.execute(f"DROP TABLE {qn(partition.name)}")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("committed_cleanup")
def test_concurrent_runs_create_each_partition_once():
    errors: list[BaseException] = []
    outputs: list[str] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        try:
            barrier.wait()
            outputs.append(run("ensure_partitions", model=["partitionapp.Event"], now="2024-05-10T00:00:00Z"))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert names("partitionapp_event")[:-1] == [f"partitionapp_event_p2024_{m:02d}" for m in (5, 6, 7, 8)]
    created = sum(int(o.rsplit("Created ", 1)[1].split()[0]) for o in outputs if "Created " in o)
    assert created == 4  # each partition created by exactly one run; the others found it done


# ---- default partition rescue --------------------------------------------------------------------


@pytest.mark.django_db
def test_rescue_moves_rows_out_of_default_in_batches_without_loss():
    stamps = [utc(2023, 1, 1) + timedelta(hours=37 * i) for i in range(45)]  # Jan to early Mar 2023
    Event.objects.bulk_create(Event(name=f"e{i}", created_at=at) for i, at in enumerate(stamps))
    before = sorted(Event.objects.values_list("id", "name", "created_at"))
    out = run(
        "ensure_partitions",
        model=["partitionapp.Event"],
        now="2023-03-02T00:00:00Z",
        rescue_default=True,
        batch_size=7,
    )
    assert "moving 21 rows out of the default partition" in out  # January 2023
    assert sorted(Event.objects.values_list("id", "name", "created_at")) == before
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM partitionapp_event_default")
        assert cursor.fetchone()[0] == 0
        cursor.execute("SELECT tableoid::regclass::text, count(*) FROM partitionapp_event GROUP BY 1 ORDER BY 1")
        per_partition = dict(cursor.fetchall())
    assert per_partition == {
        "partitionapp_event_p2023_01": 21,
        "partitionapp_event_p2023_02": 18,
        "partitionapp_event_p2023_03": 6,
    }


@pytest.mark.django_db
def test_rescue_of_referenced_rows_fails_clearly_and_moves_nothing():
    run("ensure_partitions", model=["partitionapp.Ticket"], now="2024-01-10T00:00:00Z")
    old = Ticket.objects.create(title="old", created_at=utc(2023, 6, 1))  # lands in the default partition
    TicketNote.objects.create(ticket=old, text="n", created_at=old.created_at)
    with pytest.raises(CommandError, match="referenced by a foreign key"):
        run(
            "ensure_partitions",
            model=["partitionapp.Ticket"],
            now="2024-01-10T00:00:00Z",
            rescue_default=True,
        )
    assert Ticket.objects.filter(pk=old.pk).exists()
    assert "partitionapp_ticket_p2023_06" not in names("partitionapp_ticket")


# ---- relations to a partitioned model ------------------------------------------------------------


@pytest.mark.django_db
def test_partitioned_foreign_key_enforces_the_co_partitioned_reference():
    run("ensure_partitions", model=["partitionapp.Ticket", "partitionapp.TicketNote"], now="2024-01-10T00:00:00Z")
    ticket = Ticket.objects.create(title="t", created_at=utc(2024, 1, 10, 8))
    note = TicketNote.objects.create(ticket=ticket, text="ok", created_at=ticket.created_at)
    assert list(ticket.notes.all()) == [note]
    assert TicketNote.objects.get(pk=note.pk).ticket == ticket

    def note_with_wrong_month() -> None:
        with transaction.atomic():
            TicketNote.objects.create(ticket=ticket, text="wrong month", created_at=utc(2024, 2, 1))
            connection.check_constraints()  # the key is deferred to commit: check it now

    with pytest.raises(IntegrityError):
        note_with_wrong_month()
    # Django's on_delete still cascades through the db_constraint=False ForeignKey.
    ticket.delete()
    assert not TicketNote.objects.exists()


# ---- partition_info and validate_partitions ---------------------------------------------------------


@pytest.mark.django_db
def test_partition_info_reports_ranges_rows_sizes_and_indexes():
    run("ensure_partitions", model=["partitionapp.Event"], now="2024-01-15T00:00:00Z")
    Event.objects.bulk_create(Event(name="x", created_at=utc(2024, 1, d)) for d in range(1, 11))
    before_analyze = json.loads(run("partition_info", model=["partitionapp.Event"], json=True))
    assert before_analyze[0]["estimated_rows"] is None  # unknown until ANALYZE, not zero
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE partitionapp_event")
    data = json.loads(run("partition_info", model=["partitionapp.Event"], exact=True, json=True))
    by_name = {row["partition"]: row for row in data}
    january = by_name["partitionapp_event_p2024_01"]
    assert january["rows"] == 10
    assert january["estimated_rows"] == 10
    assert january["from"] == "2024-01-01T00:00:00+00:00"
    assert january["to"] == "2024-02-01T00:00:00+00:00"
    assert january["bytes"] > 0
    assert any("name" in index for index in january["indexes"])
    assert by_name["partitionapp_event_default"]["default"] is True
    text = run("partition_info", model=["partitionapp.Event"])
    assert "partitionapp_event_p2024_04" in text and "DEFAULT" in text


@pytest.mark.django_db
def test_validate_reports_exactly_the_planted_problems():
    run("ensure_partitions", model=["partitionapp.Event"], now="2024-03-15T00:00:00Z", since="2023-11-01")
    assert "[]" in run("validate_partitions", model=["partitionapp.Event"], now="2024-03-15T00:00:00Z", json=True)
    with connection.cursor() as cursor:
        # A gap: December 2023 is gone.
        cursor.execute("ALTER TABLE partitionapp_event DETACH PARTITION partitionapp_event_p2023_12")
        cursor.execute("DROP TABLE partitionapp_event_p2023_12")
        # An index built the "ON ONLY parent, then each child" way, with one child forgotten.
        cursor.execute("CREATE INDEX event_body_idx ON ONLY partitionapp_event (name, id)")
        for partition in names("partitionapp_event"):
            if partition != "partitionapp_event_p2024_02":
                cursor.execute(f"CREATE INDEX {partition}_body ON {partition} (name, id)")
                cursor.execute(f"ALTER INDEX event_body_idx ATTACH PARTITION {partition}_body")
    # A row with no partition of its own.
    Event.objects.create(name="stray", created_at=utc(2030, 1, 1))
    with pytest.raises(CommandError, match="3 partitioning problem"):
        run("validate_partitions", model=["partitionapp.Event"], now="2024-03-15T00:00:00Z")
    out = StringIO()
    with pytest.raises(CommandError):
        call_command(
            "validate_partitions", model=["partitionapp.Event"], now="2024-03-15T00:00:00Z", json=True, stdout=out
        )
    findings = json.loads(out.getvalue())
    assert sorted((f["kind"], f["message"]) for f in findings) == [
        (
            "gap",
            "no partition for [2023-12-01, 2024-01-01)"
            " between partitionapp_event_p2023_11 and partitionapp_event_p2024_01",
        ),
        ("missing_index", "partitionapp_event_p2024_02 has no index attached to event_body_idx"),
        ("rows_in_default", "1 rows in partitionapp_event_default; run ensure_partitions --rescue-default"),
    ]


@pytest.mark.django_db
def test_validate_reports_missing_future_partitions():
    run("ensure_partitions", model=["partitionapp.Event"], now="2024-01-15T00:00:00Z")
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("validate_partitions", model=["partitionapp.Event"], now="2024-03-15T00:00:00Z", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines == [
        "partitionapp.Event: missing_future: no partition for [2024-05-01, 2024-06-01); run ensure_partitions",
        "partitionapp.Event: missing_future: no partition for [2024-06-01, 2024-07-01); run ensure_partitions",
    ]


# ---- the example project -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_example_admin_and_get_by_pk_work_on_partitioned_message(admin_client, django_user_model):
    sender = django_user_model.objects.create(username="s")
    message = Message.objects.create(sender=sender, body="hello")
    assert Message.objects.get(pk=message.pk) == message
    assert admin_client.get("/admin/chat/message/").status_code == 200
    assert admin_client.get(f"/admin/chat/message/{message.pk}/change/").status_code == 200
    conversation = Conversation.objects.create(title="c", created_by=sender)
    conversation.participants.set([sender])
    assert admin_client.get("/admin/chat/conversation/").status_code == 200
    assert admin_client.get(f"/admin/chat/conversation/{conversation.pk}/change/").status_code == 200


@pytest.mark.django_db
def test_example_recipient_must_share_its_message_created_at(django_user_model):
    sender, reader = (django_user_model.objects.create(username=n) for n in ("s", "r"))
    message = Message.objects.create(sender=sender, body="hello")
    MessageRecipient.objects.create(message=message, recipient=reader, created_at=message.created_at)
    connection.check_constraints()

    def recipient_in_another_month() -> None:
        with transaction.atomic():
            MessageRecipient.objects.create(
                message=message, recipient=sender, created_at=message.created_at - timedelta(days=40)
            )
            connection.check_constraints()

    with pytest.raises(IntegrityError, match="recipient_message_fk"):
        recipient_in_another_month()
    assert list(MessageRecipient.objects.filter(message=message, created_at=message.created_at)) != []


@pytest.mark.django_db
def test_example_queries_carry_a_created_at_bound(client, django_user_model):
    alice, bob = (django_user_model.objects.create(username=n) for n in ("alice", "bob"))
    conversation = Conversation.objects.create(title="c", created_by=alice)
    conversation.participants.set([alice, bob])
    with CaptureQueriesContext(connection) as queries:
        created = client.post(
            f"/api/conversations/{conversation.pk}/messages/",
            {"sender": alice.pk, "body": "hi"},
            content_type="application/json",
        ).json()
        client.get(f"/api/conversations/{conversation.pk}/messages/?limit=5")
        client.get(f"/api/conversations/{conversation.pk}/")
        client.get(f"/api/messages/{created['id']}/delivery/")
        client.get("/api/conversations/")
    partitioned = ("chat_message", "chat_conversation", "chat_conversationmessage", "chat_messagerecipient")
    unbounded = []
    for query in queries:
        sql = query["sql"]
        if not sql.startswith(("SELECT", "UPDATE")) or not any(f'FROM "{t}"' in sql for t in partitioned):
            continue
        where = sql.split(" WHERE ", 1)[1] if " WHERE " in sql else ""
        by_id_only = where.count("=") == 1 and '."id" = ' in where  # the URL gives only an id
        if '"created_at"' not in where and not by_id_only:
            unbounded.append(sql)
    assert unbounded == []


@pytest.mark.django_db
def test_seed_demo_data_fills_partitions_not_the_default():
    call_command("seed_demo_data", users=4, conversations=3, messages=300, days=75, stdout=StringIO())
    with connection.cursor() as cursor:
        for table in ("chat_message", "chat_conversation", "chat_conversationmessage", "chat_messagerecipient"):
            cursor.execute(f"SELECT count(*) FROM {table}_default")
            assert cursor.fetchone()[0] == 0, table
            cursor.execute(f"SELECT count(DISTINCT tableoid) FROM {table}")
            # 75 days of messages span at least three months; conversations all start on day one.
            assert cursor.fetchone()[0] >= (1 if table == "chat_conversation" else 3), table
    assert Message.objects.count() == 300


@pytest.mark.django_db
def test_metrics_source_reports_partitions_per_model():
    from django_scaleops import metrics

    figures = metrics.collect()["partitions"]
    message = figures["chat.Message"]
    assert message["partitions"] == 4  # the migration's current month + 3
    assert message["future_partitions"] == 3
    assert message["default_rows_estimate"] == 0
    assert figures["partitionapp.Event"]["partitions"] == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("committed_cleanup")
def test_busy_lock_is_retried_then_given_up_cleanly():
    import psycopg

    blocker = psycopg.connect(**connection.get_connection_params(), autocommit=False)
    try:
        blocker.execute("LOCK TABLE partitionapp_event IN ACCESS EXCLUSIVE MODE")
        with (
            override_settings(SCALEOPS_PARTITION_LOCK_TIMEOUT_MS=50, SCALEOPS_PARTITION_LOCK_RETRIES=2),
            pytest.raises(CommandError, match=r"lock stayed busy through 3 attempts of 50 ms"),
        ):
            run("ensure_partitions", model=["partitionapp.Event"], now="2024-01-15T00:00:00Z")
        with connection.cursor() as cursor:  # plain catalog read: pg_get_expr would wait for the lock
            cursor.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'partitionapp_event'::regclass")
            assert cursor.fetchone()[0] == 1  # the default partition only
        # Released during the retries: the run waits its turn and succeeds.
        release = threading.Timer(0.2, blocker.rollback)
        release.start()
        with override_settings(SCALEOPS_PARTITION_LOCK_TIMEOUT_MS=100, SCALEOPS_PARTITION_LOCK_RETRIES=8):
            out = run("ensure_partitions", model=["partitionapp.Event"], now="2024-01-15T00:00:00Z")
        release.join()
        assert "Created 4 partition(s)" in out
    finally:
        blocker.close()


@pytest.mark.django_db
def test_partitioned_migrations_match_the_models():
    out = StringIO()
    call_command("makemigrations", "chat", "partitionapp", check=True, dry_run=True, stdout=out)
    assert "No changes detected" in out.getvalue()


def test_operations_deconstruct_with_their_options():
    from django_scaleops.partitioning.operations import ConvertToPartitioned, CreatePartitionedModel

    create = CreatePartitionedModel("Thing", fields=[], interval="quarter", premake=1, default_partition=False)
    name, _, kwargs = create.deconstruct()
    assert name == "CreatePartitionedModel"
    assert (kwargs["interval"], kwargs["premake"], kwargs["default_partition"], kwargs["key"]) == (
        "quarter",
        1,
        False,
        "created_at",
    )
    convert = ConvertToPartitioned("Thing", interval="year")
    assert convert.deconstruct() == (
        "ConvertToPartitioned",
        ["Thing"],
        {"key": "created_at", "interval": "year", "default_partition": True},
    )
    with pytest.raises(PartitioningError, match="not one of"):
        CreatePartitionedModel("Thing", fields=[], interval="hourly")


@pytest.mark.django_db
def test_partitioned_foreign_key_can_be_removed_and_added_by_migrations():
    constraint = next(c for c in TicketNote._meta.constraints if c.name == "ticketnote_ticket_fk")

    def exists() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_constraint WHERE conname = 'ticketnote_ticket_fk' AND conparentid = 0"
            )
            return bool(cursor.fetchone()[0])

    assert exists()
    with connection.schema_editor() as editor:
        editor.remove_constraint(TicketNote, constraint)
    assert not exists()
    with connection.schema_editor() as editor:
        editor.add_constraint(TicketNote, constraint)
    assert exists()
    _, _, kwargs = constraint.deconstruct()
    assert kwargs == {
        "name": "ticketnote_ticket_fk",
        "fields": ["ticket", "created_at"],
        "to": "partitionapp.Ticket",
        "to_fields": ["id", "created_at"],
    }


def test_partition_names_are_recognised_exactly():
    assert intervals.is_partition_name("chat_conversation", "chat_conversation_p2024_01")
    assert intervals.is_partition_name("chat_conversation", "chat_conversation_p2024q3")
    assert intervals.is_partition_name("chat_conversation", "chat_conversation_legacy")
    # The many-to-many table of the same model is not one of its partitions.
    assert not intervals.is_partition_name("chat_conversation", "chat_conversation_participants")
    assert not intervals.is_partition_name("chat_message", "chat_messagerecipient_p2024_01")


@pytest.mark.django_db
def test_example_project_partitions_validate_clean():
    out = run("validate_partitions", model=["chat.Conversation", "chat.Message"])
    assert "no problems found" in out


@pytest.mark.django_db
def test_validate_flags_a_partition_far_from_the_median_size():
    from django_scaleops.partitioning.health import find_problems

    run("ensure_partitions", model=["partitionapp.Event"], now="2024-05-15T00:00:00Z", since="2024-01-01")
    Event.objects.bulk_create(
        Event(name="x" * 80, created_at=utc(2024, 2, 1) + timedelta(minutes=i)) for i in range(4000)
    )
    Event.objects.bulk_create(Event(name="y", created_at=utc(2024, m, 2)) for m in (1, 3, 4))
    config = get_config("partitionapp.Event")
    findings = find_problems(config, using="default", now=utc(2024, 5, 15), min_median_bytes=0)
    assert [(f.kind, f.message.split()[0]) for f in findings] == [("size_variance", "partitionapp_event_p2024_02")]
    # With the default floor (a median of at least 1 MiB), small tables are not judged.
    assert find_problems(config, using="default", now=utc(2024, 5, 15)) == []


@pytest.mark.django_db
def test_children_take_their_parent_created_at_when_left_empty(django_user_model):
    from example_project.chat.models import ConversationMessage

    sender, reader = (django_user_model.objects.create(username=n) for n in ("s", "r"))
    message = Message.objects.create(sender=sender, body="hello", created_at=utc(2024, 1, 31, 23, 59))
    saved = MessageRecipient.objects.create(message=message, recipient=reader)
    assert saved.created_at == message.created_at
    # bulk_create with only the id: one query fetches the parents' created_at.
    conversation = Conversation.objects.create(title="c", created_by=sender)
    with CaptureQueriesContext(connection) as queries:
        (placed,) = ConversationMessage.objects.bulk_create(
            [ConversationMessage(conversation=conversation, message_id=message.pk)]
        )
    assert placed.created_at == message.created_at
    assert len(queries) == 2  # the lookup and the INSERT
    connection.check_constraints()  # the database's foreign keys agree
    # An explicit value is kept (and checked by the database).
    explicit = MessageRecipient(message=message, recipient=sender, created_at=utc(2024, 3, 1))
    explicit.save()
    assert explicit.created_at == utc(2024, 3, 1)
    with pytest.raises(IntegrityError):
        connection.check_constraints()
