"""The keep/drop decision is keyed with a server secret: stable per request ID, shared by both
vendors, but not something a client can choose by picking its request IDs."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client, override_settings

from django_scaleops.apm import sampling

RATE = 0.1
IDS = [f"req-{i:06d}" for i in range(20_000)]


def unkeyed_keep(request_id: str) -> bool:
    """The decision before it was keyed: anyone could compute it."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / float(1 << 64) < RATE


def kept(ids: list[str]) -> float:
    return sum(sampling.keep(i, RATE) for i in ids) / len(ids)


@pytest.mark.units
def test_ids_a_client_picks_to_be_traced_are_kept_only_at_the_plain_rate():
    picked = [i for i in IDS if unkeyed_keep(i)]  # what a client could precompute before
    assert len(picked) > 1500
    assert 0.06 < kept(picked) < 0.14
    never = [i for i in IDS if not unkeyed_keep(i)][:5000]
    assert 0.06 < kept(never) < 0.14


@pytest.mark.units
def test_the_decision_is_stable_and_follows_the_secret():
    with override_settings(SCALEOPS_APM_SAMPLING_SECRET="a" * 40):
        first = [sampling.keep(i, RATE) for i in IDS[:5000]]
        assert first == [sampling.keep(i, RATE) for i in IDS[:5000]]
    with override_settings(SCALEOPS_APM_SAMPLING_SECRET="b" * 40):
        other = [sampling.keep(i, RATE) for i in IDS[:5000]]
    with override_settings(SECRET_KEY="another-secret-key-for-this-test-only-0123456789"):
        derived = [sampling.keep(i, RATE) for i in IDS[:5000]]
    assert first != other and first != derived
    assert 0.07 < sum(other) / 5000 < 0.13


@pytest.mark.units
def test_a_guessed_secret_key_derivation_does_not_reproduce_the_decision():
    from django.conf import settings

    naive = hashlib.blake2b(settings.SECRET_KEY.encode()[:64], digest_size=32).digest()
    assert [sampling.keep(i, RATE, key=naive) for i in IDS[:3000]] != [sampling.keep(i, RATE) for i in IDS[:3000]]


@pytest.mark.django_db
def test_the_middleware_uses_the_keyed_decision():
    with override_settings(
        SCALEOPS_APM_SAMPLE_RATE=RATE,
        MIDDLEWARE=["django_scaleops.logging.middleware.CorrelationIdMiddleware"],
    ):
        request_id = str(uuid.uuid4())
        assert sampling.should_sample(request_id, "/api/") == sampling.keep(request_id, RATE)
        assert Client().get("/api/conversations/", HTTP_X_REQUEST_ID=request_id)["X-Request-ID"] == request_id


@pytest.mark.units
def test_a_short_secret_is_reported():
    with override_settings(SCALEOPS_APM_SAMPLING_SECRET="short"), pytest.raises(SystemCheckError, match="W014"):
        call_command("check", fail_level="WARNING")


def test_bypass_routes_dropped_requests_past_the_vendors_patch() -> None:
    from django_scaleops.apm import bypass, tracing

    class Client:
        def execute_command(self, *args: object) -> tuple[str, tuple[object, ...]]:
            return "plain", args

    original = Client.__dict__["execute_command"]
    captured: bypass.Originals = {(Client, "execute_command"): original}

    def instrumented(self: Client, *args: object) -> tuple[str, tuple[object, ...]]:
        return "vendor", args

    Client.execute_command = instrumented  # type: ignore[method-assign]
    assert bypass.install(captured) == 1
    assert bypass.install(captured) == 0  # installed once only
    client = Client()
    assert client.execute_command("GET", "k") == ("vendor", ("GET", "k"))
    token = tracing._dropped.set(True)
    try:
        assert client.execute_command("GET", "k") == ("plain", ("GET", "k"))
    finally:
        tracing._dropped.reset(token)
    assert client.execute_command("GET") == ("vendor", ("GET",))
