"""System checks of the router (scaleops.E1xx / W1xx)."""

from __future__ import annotations

import copy

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_scaleops.checks import check_settings
from django_scaleops.replicas.checks import check_router
from tests.router_helpers import MIDDLEWARE, ROUTER

pytestmark = pytest.mark.units  # no server: also runs under tests.settings_units (make test-units)


def ids(**overrides: object) -> list[str]:
    overrides.setdefault("MIDDLEWARE", [MIDDLEWARE])
    with override_settings(**overrides):
        return [message.id or "" for message in check_router()]


def databases_with(**entries: dict[str, object]) -> dict[str, dict[str, object]]:
    databases = copy.deepcopy(settings.DATABASES)
    databases.update(entries)
    return databases


def test_a_sound_configuration_passes():
    database = {**settings.DATABASES["replica"], "OPTIONS": {"connect_timeout": 2}}
    with pytest.warns(UserWarning, match="DATABASES"):
        found = ids(
            DATABASE_ROUTERS=[ROUTER],
            SCALEOPS_ROUTER_REPLICA_ALIASES=["replica"],
            DATABASES=databases_with(replica=database),
        )
    assert found == []


def test_unknown_aliases_and_the_primary_as_replica_are_errors():
    assert ids(DATABASE_ROUTERS=[ROUTER], SCALEOPS_ROUTER_PRIMARY_ALIAS="nope") == ["scaleops.E101", "scaleops.W104"]
    found = ids(DATABASE_ROUTERS=[ROUTER], SCALEOPS_ROUTER_REPLICA_ALIASES=["replcia", "default"])
    assert found == ["scaleops.E102", "scaleops.E105"]


def test_router_missing_and_router_without_replicas_warn():
    assert ids(DATABASE_ROUTERS=[], SCALEOPS_ROUTER_REPLICA_ALIASES=["replica"]) == ["scaleops.W101"]
    assert ids(DATABASE_ROUTERS=[ROUTER], SCALEOPS_ROUTER_REPLICA_ALIASES=[]) == ["scaleops.W104"]
    assert ids(DATABASE_ROUTERS=[], SCALEOPS_ROUTER_REPLICA_ALIASES=[]) == []


def test_router_without_its_middleware_warns():
    found = ids(DATABASE_ROUTERS=[ROUTER], SCALEOPS_ROUTER_REPLICA_ALIASES=["replica"], MIDDLEWARE=[])
    assert "scaleops.W105" in found


def test_replica_without_test_mirror_or_connect_timeout_warns():
    bare = {key: value for key, value in settings.DATABASES["replica"].items() if key != "TEST"}
    with pytest.warns(UserWarning, match="DATABASES"):
        found = ids(
            DATABASE_ROUTERS=[ROUTER],
            SCALEOPS_ROUTER_REPLICA_ALIASES=["replica"],
            DATABASES=databases_with(replica=bare),
        )
    assert found == ["scaleops.W102", "scaleops.W103"]


def test_out_of_range_values_are_errors_naming_the_setting():
    with override_settings(
        DATABASE_ROUTERS=[ROUTER], SCALEOPS_ROUTER_REPLICA_ALIASES=["replica"], SCALEOPS_ROUTER_READMIT_CHECKS=0
    ):
        errors = [m for m in check_settings() if m.id == "scaleops.E002"]
    assert len(errors) == 1
    assert "SCALEOPS_ROUTER_READMIT_CHECKS" in errors[0].msg
    assert "0" in errors[0].msg


def test_checks_are_bound():
    with (
        override_settings(DATABASE_ROUTERS=[ROUTER], SCALEOPS_ROUTER_REPLICA_ALIASES=["nope"]),
        pytest.raises(SystemCheckError, match=r"scaleops\.E102"),
    ):
        call_command("check")


def test_replica_weights_and_the_health_cache_are_checked():
    database = {**settings.DATABASES["replica"], "OPTIONS": {"connect_timeout": 2}}
    base = {
        "DATABASE_ROUTERS": [ROUTER],
        "SCALEOPS_ROUTER_REPLICA_ALIASES": ["replica"],
        "DATABASES": databases_with(replica=database),
    }
    cases: list[tuple[dict[str, object], list[str]]] = [
        ({"SCALEOPS_ROUTER_REPLICA_WEIGHTS": {"replica": 0}}, []),
        ({"SCALEOPS_ROUTER_REPLICA_WEIGHTS": {"replica2": 1}}, ["scaleops.E106"]),
        ({"SCALEOPS_ROUTER_REPLICA_WEIGHTS": {"replica": -1}}, ["scaleops.E108"]),
        ({"SCALEOPS_ROUTER_REPLICA_WEIGHTS": {"replica": 1.5}}, ["scaleops.E108"]),
        ({"SCALEOPS_ROUTER_REPLICA_WEIGHTS": {"replica": True}}, ["scaleops.E108"]),
        ({"SCALEOPS_ROUTER_HEALTH_CACHE_ALIAS": "default"}, []),
        ({"SCALEOPS_ROUTER_HEALTH_CACHE_ALIAS": "nowhere"}, ["scaleops.E107"]),
    ]
    for extra, expected in cases:
        with pytest.warns(UserWarning, match="DATABASES"):
            found = ids(**base, **extra)
        assert found == expected, extra
