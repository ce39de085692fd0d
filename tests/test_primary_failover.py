"""Primary failover against real servers, in a launcher set of its own: aliases that list both
hosts (libpq's multi-host HOST with target_session_attrs) follow a promoted standby; writes resume
after at most one failed statement per connection that was open to the old primary; the router
takes the promoted server out of the standbys; a read-your-writes position of the old timeline
is not trusted."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import InterfaceError, OperationalError, connections
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from django_scaleops.replicas.health import DOWN, HEALTHY
from django_scaleops.replicas.lsn import format_lsn
from django_scaleops.replicas.middleware import COOKIE_SALT, ReplicaRoutingMiddleware
from django_scaleops.replicas.router import capture_read_position
from django_scaleops.replicas.routing import ReplicaPool, get_pool
from django_scaleops.replicas.state import RoutingState, current_state, restore_read_position, routing_state
from django_scaleops.routers import replica_status
from django_scaleops.testing.env import database_from_url
from django_scaleops.testing.services import PostgresServer, Services
from tests.router_helpers import fresh_routing, router_settings, wait_until
from tests.routerapp.models import Note

PRIMARY, REPLICA = "failover_primary", "failover_replica"


@pytest.fixture(scope="module")
def failover_set(scaleops_services: Services) -> Iterator[Services]:
    """A set of its own: promoting its standby must not take the session's primary away."""
    services = Services.start()
    try:
        yield services
    finally:
        services.teardown()


def both_hosts(first: PostgresServer, second: PostgresServer, attrs: str) -> dict[str, Any]:
    entry = database_from_url(first.url, OPTIONS={"target_session_attrs": attrs, "connect_timeout": 2})
    entry["HOST"] = "127.0.0.1,127.0.0.1"
    entry["PORT"] = f"{first.port},{second.port}"
    return entry


@pytest.fixture(scope="module")
def aliases(failover_set: Services) -> Iterator[None]:
    old, standby = failover_set.primary, failover_set.replica
    entries = {PRIMARY: both_hosts(old, standby, "read-write"), REPLICA: both_hosts(standby, old, "prefer-standby")}
    default = copy.deepcopy(connections["default"].settings_dict)
    configured = connections.configure_settings({"default": default, **entries})
    for alias in entries:
        settings.DATABASES[alias] = connections.settings[alias] = configured[alias]
    yield
    for alias in entries:
        connections[alias].close()
        del connections[alias]
        connections.settings.pop(alias, None)
        settings.DATABASES.pop(alias, None)


@pytest.fixture
def pool(aliases: None, django_db_blocker: Any) -> Iterator[ReplicaPool]:
    routed = router_settings(
        SCALEOPS_ROUTER_PRIMARY_ALIAS=PRIMARY,
        SCALEOPS_ROUTER_REPLICA_ALIASES=[REPLICA],
        SCALEOPS_ROUTER_CHECK_INTERVAL=3600,  # the test runs the checks
    )
    with django_db_blocker.unblock(), routed, fresh_routing():
        current = get_pool()
        assert current is not None
        current.ensure_monitor()
        wait_until(lambda: current.health[REPLICA].last_check is not None, message="the first check")
        yield current


def reads_from() -> str | None:
    return Note.objects.all().db


@pytest.mark.services
def test_writes_follow_the_promoted_standby(failover_set: Services, pool: ReplicaPool) -> None:
    old, standby = failover_set.primary, failover_set.replica
    with connections[PRIMARY].schema_editor() as editor:
        editor.create_model(Note)
    Note.objects.create(body="before")
    state = current_state()
    pool.resolve_write_position(state)
    written = (state.min_lsn, state.timeline)
    assert state.timeline == 1 and pool.primary_timeline == 1
    handed_over = capture_read_position()  # as a view hands it to a background task
    assert handed_over == f"{format_lsn(written[0])};;1"
    # The replica alias lists both hosts too; prefer-standby reaches the standby.
    wait_until(lambda: reads_from() == REPLICA, message="the standby replaying the write")
    assert connections[REPLICA].connection.info.port == standby.port
    # A position of another timeline is not compared by LSN: the primary answers, and the client
    # then needs what the primary has now.
    with routing_state(RoutingState(min_lsn=written[0], timeline=7)) as foreign:
        assert reads_from() == PRIMARY
        assert foreign.timeline == 1 and foreign.min_lsn >= written[0]

    standby.promote()
    old.stop("fast")

    # The one connection open to the old primary fails one statement, then is closed at once;
    # the next statement connects to the host that now accepts writes.
    failures = 0
    while True:
        try:
            Note.objects.create(body="after")
            break
        except (OperationalError, InterfaceError):
            failures += 1
            assert failures <= 1, "writes did not resume after the documented one failed statement"
    assert failures == 1
    assert connections[PRIMARY].connection.info.port == standby.port
    assert standby.sql("SELECT string_agg(body, ',' ORDER BY id) FROM routerapp_note") == "before,after"

    pool.check_all()
    status = replica_status()
    assert status["primary_server"]["port"] == standby.port
    assert status["primary_server"]["timeline"] == 2
    # The promoted server answers the replica alias too, but it is no standby any more.
    assert status["replicas"][REPLICA]["state"] == DOWN
    assert "not in recovery" in status["replicas"][REPLICA]["last_error"]

    # A position of the old timeline, with a task's state and through the cookie.
    with routing_state(RoutingState(min_lsn=written[0], timeline=written[1])) as carried:
        assert reads_from() == PRIMARY
        assert carried.timeline == 2
    assert cookie_after_request(f"{format_lsn(written[0])};;{written[1]}").endswith(";;2")
    # And the position a task was handed before the failover.
    with restore_read_position(handed_over):
        assert reads_from() == PRIMARY
        assert current_state().timeline == 2
    # It comes back when it is a standby again (here: never), not because it answers.
    assert pool.health[REPLICA].state != HEALTHY


def cookie_after_request(value: str) -> str:
    response = HttpResponse()
    response.set_signed_cookie("scaleops_rw", value, salt=COOKIE_SALT)
    request = RequestFactory().get("/")
    request.COOKIES["scaleops_rw"] = response.cookies["scaleops_rw"].value

    def view(request: HttpRequest) -> HttpResponse:
        assert reads_from() == PRIMARY
        return HttpResponse()

    answered = ReplicaRoutingMiddleware(view)(request)
    # Read back the way the next request reads it.
    following = RequestFactory().get("/")
    following.COOKIES["scaleops_rw"] = answered.cookies["scaleops_rw"].value
    return str(following.get_signed_cookie("scaleops_rw", salt=COOKIE_SALT))
