"""Fixtures shared by the cache test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection
from django_redis import get_redis_connection

from django_scaleops.cache import keys, l1, stats
from django_scaleops.cache.backend import gate
from django_scaleops.cache.keys import stamp_key

PROBE_SQL = """
CREATE SEQUENCE IF NOT EXISTS cacheapp_probe_seq;
CREATE OR REPLACE FUNCTION cacheapp_probe(pause float DEFAULT 0) RETURNS bigint
LANGUAGE sql VOLATILE AS $$ SELECT pg_sleep(pause); SELECT nextval('cacheapp_probe_seq') $$;
"""


@pytest.fixture
def clean_cache() -> Iterator[None]:
    """An empty Redis, zeroed statistics and a closed circuit for each test."""
    get_redis_connection("default").flushdb()
    keys.forget_compiled()  # a test may have changed a model's columns under a compiled query
    stats.reset()
    gate.reset_state()
    l1.tier.flush()
    yield
    gate.reset_state()


def stamp(table: str) -> bytes | None:
    value: bytes | None = get_redis_connection("default").get(stamp_key(table))
    return value


def install_probe() -> None:
    with connection.cursor() as cursor:
        cursor.execute(PROBE_SQL)


def probe_calls() -> int:
    """Calls of cacheapp_probe() so far, counted by the database (sequences ignore rollbacks)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM cacheapp_probe_seq")
        return int(cursor.fetchone()[0])
