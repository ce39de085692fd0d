"""PrimaryReplicaRouter against a real primary and streaming replica: routing, transaction
safety and read-your-writes by WAL position."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.db import DatabaseError, connections, transaction
from django.db.models.signals import post_migrate, post_save
from django.http import HttpResponse
from django.test import AsyncClient, Client, override_settings

from django_scaleops.replicas.lsn import format_lsn, parse_lsn
from django_scaleops.replicas.middleware import COOKIE_SALT
from django_scaleops.replicas.routing import get_pool
from django_scaleops.replicas.state import current_state, primary_forced, routing_state, set_migrating
from django_scaleops.routers import (
    PrimaryReplicaRouter,
    capture_read_position,
    replica_status,
    reset_routing_state,
    restore_read_position,
    use_primary,
)
from django_scaleops.testing.routing import assert_reads_from, record_reads
from tests.router_helpers import (
    MIDDLEWARE,
    fresh_routing,
    port_of,
    raw_scalar,
    replay_paused,
    router_settings,
    wait_for_replay,
    wait_until,
)
from tests.routerapp.models import Note
from tests.routerapp.views import read_note

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica"])


@pytest.fixture
def router():
    with router_settings(), fresh_routing():
        yield


@pytest.fixture
def web(router):
    with override_settings(ROOT_URLCONF="tests.routerapp.urls", MIDDLEWARE=[MIDDLEWARE]):
        yield


def committed_note(body: str = "seen by all") -> Note:
    """A note that the replica has replayed, written without pinning this context."""
    with use_primary():
        note = Note.objects.using("default").create(body=body)
    wait_for_replay()
    # Someone else's write: this context must not stay pinned behind WAL written since.
    reset_routing_state()
    return note


def test_lsn_round_trip_and_bad_input():
    assert parse_lsn("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert format_lsn(parse_lsn("0/3000148")) == "0/3000148"
    for bad in ("", "16", "/1", "zz/1", "123456789/1"):
        with pytest.raises(ValueError, match="WAL position"):
            parse_lsn(bad)


def test_reads_go_to_the_replica_and_writes_to_the_primary(router):
    note = committed_note()
    with assert_reads_from("replica", at_least=2):
        assert read_note(note.pk) == {"body": "seen by all", "port": port_of("replica")}
        assert Note.objects.count() == 1
    with record_reads() as log:
        Note.objects.filter(pk=note.pk).update(body="changed")
    assert log.aliases == []  # an UPDATE is not a read
    assert raw_scalar("default", f"SELECT body FROM routerapp_note WHERE id = {note.pk}") == "changed"
    router_ = PrimaryReplicaRouter()
    assert router_.allow_migrate("default", "routerapp") is True
    assert router_.allow_migrate("replica", "routerapp") is False
    assert router_.allow_migrate("pgbouncer", "routerapp") is None
    other = Note.objects.using("replica").get(pk=note.pk)
    assert router_.allow_relation(note, other) is True


def test_using_is_always_honoured(router):
    note = committed_note()
    with assert_reads_from("default"):
        assert Note.objects.using("default").get(pk=note.pk).body == "seen by all"
    with use_primary(), assert_reads_from("replica"):
        assert Note.objects.using("replica").filter(pk=note.pk).exists()


def test_create_then_read_never_stale_while_replay_is_paused(router):
    with replay_paused():
        note = Note.objects.create(body="mine")
        # The replica really is behind: asked directly, it does not have the row.
        assert not Note.objects.using("replica").filter(pk=note.pk).exists()
        assert read_note(note.pk) == {"body": "mine", "port": port_of("default")}
        assert current_state().min_lsn > 0
    wait_for_replay()
    # Caught up: the same context reads from the replica again.
    assert read_note(note.pk) == {"body": "mine", "port": port_of("replica")}


def test_raw_cursor_writes_are_tracked(router):
    committed_note()
    with replay_paused():
        with connections["default"].cursor() as cursor:
            cursor.execute("INSERT INTO routerapp_note (body, created_at) VALUES ('raw', now()) RETURNING id")
            pk = cursor.fetchone()[0]
        assert read_note(pk) == {"body": "raw", "port": port_of("default")}


def test_reads_inside_atomic_and_select_for_update_use_the_primary(router):
    note = committed_note()
    with transaction.atomic(), record_reads() as log:
        mine = Note.objects.create(body="in a transaction")
        assert read_note(mine.pk) is not None
        assert Note.objects.select_for_update().get(pk=note.pk).body == "seen by all"
        assert Note.objects.count() == 2
    assert set(log.aliases) == {"default"}
    assert not connections["replica"].in_atomic_block


def test_post_save_receiver_reads_its_own_write(router):
    seen: list[object] = []

    def receiver(sender, instance, created, **kwargs):
        seen.append(read_note(instance.pk))

    post_save.connect(receiver, sender=Note, dispatch_uid="test-router-post-save")
    try:
        with replay_paused():
            Note.objects.create(body="from a signal")
    finally:
        post_save.disconnect(dispatch_uid="test-router-post-save")
    assert seen == [{"body": "from a signal", "port": port_of("default")}]


def test_post_migrate_handlers_read_from_the_primary(router):
    committed_note()
    aliases: list[str] = []

    def receiver(sender, **kwargs):
        with record_reads() as log:
            Note.objects.count()
        aliases.extend(log.aliases)

    post_migrate.connect(receiver, dispatch_uid="test-router-post-migrate")
    try:
        call_command("migrate", verbosity=0, interactive=False)
    finally:
        post_migrate.disconnect(dispatch_uid="test-router-post-migrate")
    assert aliases
    assert set(aliases) == {"default"}
    # After migrate, reads leave the primary again.
    assert not primary_forced()
    reset_routing_state()
    wait_for_replay()
    with assert_reads_from("replica"):
        Note.objects.count()


def test_use_primary_as_context_manager_and_decorator(router):
    committed_note()

    @use_primary()
    def count() -> int:
        return Note.objects.count()

    @use_primary()
    async def acount() -> int:
        return await Note.objects.acount()

    with assert_reads_from("default", at_least=3):
        with use_primary():
            Note.objects.count()
        assert count() == 1
        assert async_to_sync(acount)() == 1
    with assert_reads_from("replica"):
        Note.objects.count()


def test_background_task_reads_what_the_caller_wrote(router):
    with replay_paused():
        note = Note.objects.create(body="queued")
        position = capture_read_position()
        assert position is not None
        results: dict[str, object] = {}

        def task(name: str, carried: str | None) -> None:
            try:
                with restore_read_position(carried):
                    results[name] = read_note(note.pk)
            finally:
                connections.close_all()

        for name, carried in (("with", position), ("without", None)):
            worker = threading.Thread(target=task, args=(name, carried))
            worker.start()
            worker.join()
    # The helper carries the write to the task; a task without it reads the lagging replica.
    assert results == {"with": {"body": "queued", "port": port_of("default")}, "without": None}


def test_next_request_with_the_cookie_reads_its_write(web):
    client, stranger = Client(), Client()
    committed_note()
    with replay_paused():
        response = client.post("/notes/", json.dumps({"body": "posted"}), content_type="application/json")
        assert response.status_code == 201
        pk = response.json()["id"]
        # Same request: the view reads back what it just created, from the primary.
        assert response.json()["read_back"] == {"body": "posted", "port": port_of("default")}
        cookie = client.cookies["scaleops_rw"]
        assert cookie["httponly"]
        detail = client.get(f"/notes/{pk}/")
        assert detail.status_code == 200
        assert detail.json() == {"body": "posted", "port": port_of("default")}
        # Another client has no pin: it reads the paused replica, which lacks the row.
        assert stranger.get(f"/notes/{pk}/").status_code == 404
        # A forged cookie is ignored rather than trusted.
        forged = Client()
        forged.cookies["scaleops_rw"] = "FFFFFFFF/0"
        assert forged.get(f"/notes/{pk}/").status_code == 404
    wait_for_replay()
    assert client.get(f"/notes/{pk}/").json() == {"body": "posted", "port": port_of("replica")}


def test_asgi_write_sets_the_cookie_and_the_next_async_request_reads_it(web):
    committed_note()

    async def post_then_get() -> tuple[Any, Any, Any]:
        client = AsyncClient()
        created = await client.post("/notes/", json.dumps({"body": "async"}), content_type="application/json")
        detail = await client.get(f"/notes/{created.json()['id']}/")
        return created, detail, client.cookies.get("scaleops_rw")

    with replay_paused():
        created, detail, cookie = async_to_sync(post_then_get)()
    assert created.status_code == 201
    assert cookie is not None and cookie.value
    assert detail.json() == {"body": "async", "port": port_of("default")}


def signed_cookie(value: str) -> str:
    # Signed the way Django signs it (its format changed in 6.1), so this test is version-proof.
    response = HttpResponse()
    response.set_signed_cookie("scaleops_rw", value, salt=COOKIE_SALT)
    return response.cookies["scaleops_rw"].value


def test_concurrent_asgi_requests_do_not_share_pins(web):
    committed_note()
    with replay_paused():
        Note.objects.create(body="not replayed yet")
        ahead = capture_read_position()  # a position the paused replica has not reached
        assert ahead is not None
        pins = [None, "0/1000", None, ahead] * 5

        async def one(pin: str | None) -> Any:
            client = AsyncClient()
            if pin:
                client.cookies["scaleops_rw"] = signed_cookie(pin)
            response = await client.get("/whoami/", {"sleep": "0.01"})
            return response.json()

        async def all_at_once() -> list[Any]:
            return await asyncio.gather(*(one(pin) for pin in pins))

        results = async_to_sync(all_at_once)()
    for pin, result in zip(pins, results, strict=True):
        lsn = pin.partition(";")[0] if pin else None  # a captured position carries its timeline
        assert result["before"] == lsn
        assert result["after"] == lsn
        if pin == ahead:
            # Pinned past the replica: the primary answers, whatever the others do meanwhile.
            assert (result["replica"], result["port"]) == (None, port_of("default"))
        else:
            assert (result["replica"], result["port"]) == ("replica", port_of("replica"))


@pytest.mark.django_db(transaction=True, databases=["default", "replica_mirror"])
def test_a_test_mirror_is_served_read_only_and_kept_out_of_transactions():
    mirror_alias = "replica_mirror"
    with router_settings(SCALEOPS_ROUTER_REPLICA_ALIASES=[mirror_alias]), fresh_routing():
        note = Note.objects.create(body="mirrored")
        # The mirror is the primary's own database: it never lags, so it serves reads at once.
        with assert_reads_from(mirror_alias):
            assert read_note(note.pk) == {"body": "mirrored", "port": port_of("default")}
        with pytest.raises(DatabaseError, match="read-only transaction"):
            Note.objects.using(mirror_alias).create(body="a write through a replica alias")
        with transaction.atomic(), assert_reads_from("default"):
            assert Note.objects.filter(pk=note.pk).exists()
        pool = get_pool()
        assert pool is not None
        pool.check_all()
        assert replica_status()["replicas"][mirror_alias]["state"] == "healthy"
        assert replica_status()["replicas"][mirror_alias]["mirror"] is True


# ---- the fast path: a context whose reads already go to a replica notices every change at once


def routed_context(note: Note) -> None:
    """Read twice from the replica: this context now has a route (the router's fast path)."""
    with assert_reads_from("replica", at_least=2):
        assert read_note(note.pk) is not None
        assert read_note(note.pk) is not None
    assert current_state().route is not None


def test_a_routed_context_notices_transactions_use_primary_migrations_and_writes(router):
    note = committed_note()
    routed_context(note)
    with transaction.atomic(), assert_reads_from("default"):
        assert read_note(note.pk) is not None
    with use_primary(), assert_reads_from("default"):
        assert read_note(note.pk) is not None
    set_migrating(True)
    try:
        with assert_reads_from("default"):
            assert read_note(note.pk) is not None
    finally:
        set_migrating(False)
    with assert_reads_from("replica"):
        assert read_note(note.pk) is not None
    with replay_paused():
        Note.objects.filter(pk=note.pk).update(body="mine")
        with assert_reads_from("default", at_least=2):
            assert read_note(note.pk) == {"body": "mine", "port": port_of("default")}
            assert read_note(note.pk) == {"body": "mine", "port": port_of("default")}
    wait_for_replay()
    # Replayed: the position is checked on the fast path too, and holds.
    with assert_reads_from("replica", at_least=3):
        for _ in range(3):
            assert read_note(note.pk) == {"body": "mine", "port": port_of("replica")}


def test_a_routed_context_notices_health_settings_and_a_closed_connection(router):
    note = committed_note()
    routed_context(note)
    pool = get_pool()
    assert pool is not None
    pool.mark_down("replica", "taken out by the test")
    with assert_reads_from("default"):
        assert read_note(note.pk) is not None
    wait_until(lambda: pool.health["replica"].state == "healthy", message="re-admission after good checks")
    with assert_reads_from("replica", at_least=2):
        assert read_note(note.pk) is not None
        assert read_note(note.pk) is not None
    connections["replica"].close()
    with assert_reads_from("replica", at_least=2):
        assert read_note(note.pk) is not None
        assert read_note(note.pk) is not None
    route = current_state().route
    assert route is not None and route.raw is connections["replica"].connection is not None
    with override_settings(SCALEOPS_ROUTER_REPLICA_ALIASES=[]), assert_reads_from("default"):
        assert read_note(note.pk) is not None
    with assert_reads_from("replica"):
        assert read_note(note.pk) is not None


def test_a_route_taken_in_one_thread_is_not_followed_in_another(router):
    """Two threads may share a routing state (a copied context): each has its own connections,
    so a transaction open in one must send that thread's reads to the primary."""
    note = committed_note()
    routed_context(note)
    shared = current_state()
    seen: dict[str, Any] = {}

    def in_a_transaction() -> None:
        try:
            with routing_state(shared), transaction.atomic(), record_reads() as log:
                # A read before any write: only the transaction keeps it on the primary.
                seen["first"] = read_note(note.pk)
                Note.objects.filter(pk=note.pk).update(body="in the other thread")
                seen["read"] = read_note(note.pk)
                seen["aliases"] = log.aliases
        except Exception as exc:  # reported by the assertion below
            seen["error"] = exc
        finally:
            connections.close_all()

    worker = threading.Thread(target=in_a_transaction)
    worker.start()
    worker.join()
    assert "error" not in seen, seen.get("error")
    assert seen["first"] == {"body": "seen by all", "port": port_of("default")}
    assert seen["read"] == {"body": "in the other thread", "port": port_of("default")}
    assert seen["aliases"] == ["default", "default"]
