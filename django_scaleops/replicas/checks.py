"""System checks of the router (IDs scaleops.E1xx / W1xx).

Intervals, timeouts and lag limits are declared with their ranges in conf and checked by
django_scaleops.checks.check_settings; here, the aliases against DATABASES and the wiring.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.utils.module_loading import import_string

from django_scaleops.checks import middleware_paths, postgres_problem
from django_scaleops.conf import conf

ROUTER_PATH = "django_scaleops.routers.PrimaryReplicaRouter"
MIDDLEWARE_PATH = "django_scaleops.replicas.middleware.ReplicaRoutingMiddleware"


def check_router(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from django_scaleops.replicas.router import PrimaryReplicaRouter

    messages: list[CheckMessage] = []
    # Values of the wrong type read as the defaults (and are scaleops.E001).
    primary = conf.SCALEOPS_ROUTER_PRIMARY_ALIAS
    replicas = conf.SCALEOPS_ROUTER_REPLICA_ALIASES
    installed = any(_is_router(r, PrimaryReplicaRouter) for r in settings.DATABASE_ROUTERS)
    if not installed:
        if replicas:
            messages.append(
                Warning(
                    f"SCALEOPS_ROUTER_REPLICA_ALIASES is set ({list(replicas)!r}) but the router is not installed,"
                    " so no read goes to a replica.",
                    hint=f'Add "{ROUTER_PATH}" to DATABASE_ROUTERS.',
                    id="scaleops.W101",
                )
            )
        return messages
    if primary not in settings.DATABASES:
        messages.append(
            Error(
                f"SCALEOPS_ROUTER_PRIMARY_ALIAS {primary!r} is not a DATABASES alias.",
                hint=f"Use one of {sorted(settings.DATABASES)!r}.",
                id="scaleops.E101",
            )
        )
    for alias in [primary, *replicas]:
        problem = postgres_problem(alias) if alias in settings.DATABASES else None
        if problem is not None:
            messages.append(
                Error(
                    f"PrimaryReplicaRouter needs PostgreSQL 14+ (it reads WAL positions), but {problem}.",
                    hint='Use "django.db.backends.postgresql" for the primary and every replica alias.',
                    id="scaleops.E104",
                )
            )
    for alias in replicas:
        if alias == primary:
            messages.append(
                Error(
                    f"SCALEOPS_ROUTER_REPLICA_ALIASES names {alias!r}, which is the primary"
                    " (SCALEOPS_ROUTER_PRIMARY_ALIAS): reads would never leave it.",
                    hint=f"Replica aliases must be DATABASES aliases other than {primary!r}.",
                    id="scaleops.E105",
                )
            )
            continue
        if alias not in settings.DATABASES:
            messages.append(
                Error(
                    f"SCALEOPS_ROUTER_REPLICA_ALIASES names {alias!r}, which is not a DATABASES alias.",
                    hint=f"Use one of {sorted(set(settings.DATABASES) - {primary})!r}.",
                    id="scaleops.E102",
                )
            )
            continue
        database = settings.DATABASES[alias]
        if not database.get("TEST", {}).get("MIRROR"):
            messages.append(
                Warning(
                    f"Replica alias {alias!r} has no TEST MIRROR: the test runner would try to create a test"
                    " database on a read-only standby.",
                    hint=f'Add "TEST": {{"MIRROR": "{primary}"}} to DATABASES[{alias!r}].',
                    id="scaleops.W102",
                )
            )
        if "connect_timeout" not in database.get("OPTIONS", {}):
            messages.append(
                Warning(
                    f"Replica alias {alias!r} has no connect_timeout: a replica host that stops answering can"
                    " hold a read for the operating system's TCP timeout before failover.",
                    hint=f'Add "OPTIONS": {{"connect_timeout": 2}} to DATABASES[{alias!r}].',
                    id="scaleops.W103",
                )
            )
    weights: dict[str, object] = dict(conf.SCALEOPS_ROUTER_REPLICA_WEIGHTS)  # values as the project wrote them
    for alias, weight in weights.items():
        if alias not in replicas:
            messages.append(
                Error(
                    f"SCALEOPS_ROUTER_REPLICA_WEIGHTS weighs {alias!r}, which is not a replica alias"
                    " (SCALEOPS_ROUTER_REPLICA_ALIASES).",
                    hint=f"Weigh only the replica aliases {list(replicas)!r}.",
                    id="scaleops.E106",
                )
            )
        elif not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            messages.append(
                Error(
                    f"SCALEOPS_ROUTER_REPLICA_WEIGHTS[{alias!r}] must be an int of at least 0, not {weight!r}.",
                    hint="A weight is a share of reads: 1 for an ordinary replica, 0 for none, more for a bigger one.",
                    id="scaleops.E108",
                )
            )
    health_cache = conf.SCALEOPS_ROUTER_HEALTH_CACHE_ALIAS
    if health_cache and health_cache not in settings.CACHES:
        messages.append(
            Error(
                f"SCALEOPS_ROUTER_HEALTH_CACHE_ALIAS names {health_cache!r}, which is not a CACHES alias:"
                " each process would check the replicas alone.",
                hint=f"Use a cache all workers share (Redis), one of {sorted(settings.CACHES)!r}, or None.",
                id="scaleops.E107",
            )
        )
    if replicas and MIDDLEWARE_PATH not in middleware_paths():
        messages.append(
            Warning(
                "The router is installed without ReplicaRoutingMiddleware: a client's writes are not carried"
                " to its next request, and routing state lives per thread instead of per request.",
                hint=f'Add "{MIDDLEWARE_PATH}" near the top of MIDDLEWARE.',
                id="scaleops.W105",
            )
        )
    if not replicas:
        messages.append(
            Warning(
                "The router is installed but SCALEOPS_ROUTER_REPLICA_ALIASES is empty: every read goes to the primary.",
                hint="List your replica aliases in SCALEOPS_ROUTER_REPLICA_ALIASES.",
                id="scaleops.W104",
            )
        )
    return messages


def _is_router(entry: Any, router_class: type) -> bool:
    if isinstance(entry, str):
        try:
            entry = import_string(entry)
        except ImportError:
            return False
    return isinstance(entry, router_class) or (isinstance(entry, type) and issubclass(entry, router_class))
