"""Cached querysets with the read-replica router: replication lag is never stored in the cache."""

from __future__ import annotations

import pytest

from django_scaleops.replicas.state import reset_routing_state
from django_scaleops.testing.routing import record_reads
from tests.cacheapp.helpers import clean_cache  # noqa: F401
from tests.cacheapp.models import Author, Book
from tests.router_helpers import fresh_routing, replay_paused, router_settings, wait_for_replay

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "replica"]),
    pytest.mark.usefixtures("clean_cache"),
]


def test_a_miss_after_a_write_is_filled_from_the_primary_while_the_replica_lags():
    with router_settings(), fresh_routing():
        book = Book.objects.create(title="draft", author=Author.objects.create(name="Ada"), pages=1)
        wait_for_replay()
        reset_routing_state()
        assert Book.objects.filter(pk=book.pk).cached(timeout=60)[0].title == "draft"
        with replay_paused():
            Book.objects.filter(pk=book.pk).update(title="final")
            # Another client: no read position of its own, so plain reads may go to the replica.
            reset_routing_state()
            with record_reads() as log:
                rows = Book.objects.filter(pk=book.pk).cached(timeout=60)
            assert [b.title for b in rows] == ["final"]
            assert log.aliases == ["default"]
            # The stored entry is the fresh one: a hit, no database read at all.
            with record_reads() as log:
                assert Book.objects.filter(pk=book.pk).cached(timeout=60)[0].title == "final"
            assert log.aliases == []


def test_an_explicit_using_is_kept():
    with router_settings(), fresh_routing():
        Book.objects.create(title="t", author=Author.objects.create(name="Bo"), pages=1)
        wait_for_replay()
        reset_routing_state()
        with record_reads() as log:
            assert Book.objects.using("replica").filter(title="t").cached(timeout=60)[0].title == "t"
        assert log.aliases == ["replica"]
