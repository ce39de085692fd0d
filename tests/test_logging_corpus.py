"""A corpus of 200+ secrets in 9 placements, and 5,000 harmless look-alikes, through the formatter.

The corpus functions are reused by the APM tests (Sentry envelopes, Datadog spans).
"""

from __future__ import annotations

import base64
import datetime
import io
import json
import logging
import random
import string
import uuid
from collections.abc import Callable, Iterator

import pytest

from django_scaleops.logging import JsonFormatter, Masker
from django_scaleops.ratelimit.keys import generate_key

ALNUM = string.ascii_letters + string.digits


def _rand(rng: random.Random, length: int, alphabet: str = ALNUM) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        candidate = body + check
        total = 0
        for position, char in enumerate(reversed(candidate)):
            value = int(char) * (2 if position % 2 else 1)
            total += value - 9 if value > 9 else value
        if total % 10 == 0:
            return candidate
    raise AssertionError("unreachable")


def _jwt(rng: random.Random) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return (
        f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'sub': rng.randint(1, 10**6)})}.{_rand(rng, 43, ALNUM + '-_')}"
    )


def secret_corpus() -> list[tuple[str, str]]:
    """(kind, secret) pairs: 16 of each of 14 kinds, 224 in all."""
    rng = random.Random(42)
    makers: dict[str, Callable[[], str]] = {
        "password": lambda: _rand(rng, 14, ALNUM + "!#$%^*"),
        "bearer": lambda: "Bearer " + _rand(rng, 40, ALNUM + "-._~"),
        "jwt": lambda: _jwt(rng),
        "pem": lambda: (
            "-----BEGIN RSA PRIVATE KEY-----\n"
            + "\n".join(_rand(rng, 64, ALNUM + "+/") for _ in range(3))
            + "\n-----END RSA PRIVATE KEY-----"
        ),
        "scaleops_key": lambda: generate_key().key,
        "aws": lambda: "AKIA" + _rand(rng, 16, string.ascii_uppercase + string.digits),
        "stripe": lambda: f"sk_live_{_rand(rng, 24)}",
        "github": lambda: "ghp_" + _rand(rng, 36),
        "slack": lambda: f"xoxb-{rng.randint(10**10, 10**11)}-{_rand(rng, 24)}",
        "google": lambda: "AIza" + _rand(rng, 35, ALNUM + "-_"),
        "openai": lambda: "sk-proj-" + _rand(rng, 40),
        "ssn": lambda: f"{rng.randint(100, 665):03d}-{rng.randint(10, 99):02d}-{rng.randint(1000, 9999):04d}",
        "visa": lambda: _luhn_complete("4", 16, rng),
        "card_spaced": lambda: " ".join(
            (lambda n: [n[i : i + 4] for i in range(0, 16, 4)])(_luhn_complete(rng.choice(["51", "55", "4"]), 16, rng))
        ),
    }
    return [(kind, make()) for kind, make in makers.items() for _ in range(16)]


def secret_core(secret: str) -> list[str]:
    """The parts of a secret that must never appear in output."""
    if secret.startswith("-----BEGIN"):
        return secret.splitlines()[1:-1]
    if secret.startswith("Bearer "):
        return [secret[len("Bearer ") :]]
    if " " in secret:  # spaced card: neither form may appear
        return [secret, secret.replace(" ", "")]
    return [secret]


class Creds:
    def __init__(self, secret: str) -> None:
        self.secret = secret

    def __repr__(self) -> str:
        return f"Creds(user='bob', api_key={self.secret!r})"


def emit_placements(logger: logging.Logger, kind: str, secret: str) -> int:
    """Log ``secret`` in nine placements. Returns how many records were written."""
    # Shape-less secrets (passwords) are only recognisable by their key; the rest by shape alone.
    key = "password" if kind == "password" else "note"
    logger.info("nested extras", extra={"payload": {"user": {"id": 7, key: secret, "items": [{key: secret}]}}})
    logger.info("login %s=%s done", key, secret)
    logger.info(f"f-string {key}={secret} ok")
    try:
        raise ValueError(f"could not verify {key}={secret}")
    except ValueError:
        logger.exception("traceback")
    logger.info(
        "headers %s",
        {"Authorization": secret, "Cookie": f"sessionid={secret}"},
        extra={"headers": {"Authorization": secret, "X-Api-Key": secret}},
    )
    logger.info(f"GET /callback?state=ok&access_token={secret}&{key}={secret}")
    logger.info("object %r", Creds(secret))
    logger.info({"event": "dict message", "api_token": secret, "detail": {"access_token": secret}})
    logger.warning("stack", stack_info=True, extra={"context": [f"{key}: {secret}"]})
    return 9


@pytest.fixture
def json_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.secrets")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_corpus_size() -> None:
    corpus = secret_corpus()
    assert len(corpus) >= 200
    assert len({kind for kind, _ in corpus}) >= 12
    assert len({secret for _, secret in corpus}) == len(corpus)


def test_no_secret_leaks_in_any_placement(json_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_logger
    leaks = []
    for kind, secret in secret_corpus():
        start = stream.tell()
        written = emit_placements(logger, kind, secret)
        lines = stream.getvalue()[start:].splitlines()
        assert len(lines) == written
        for line in lines:
            record = json.loads(line)  # every line is JSON
            assert "[MASKED]" in line, record
            for core in secret_core(secret):
                if core in line or json.dumps(core)[1:-1] in line:
                    leaks.append((kind, record["message"][:60]))
    assert leaks == []


def look_alikes() -> list[str]:
    """5,000 harmless values that resemble secrets: IDs, timestamps, order and tracking numbers."""
    rng = random.Random(7)
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    makers: list[Callable[[], str]] = [
        lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        lambda: uuid.UUID(int=rng.getrandbits(128), version=4).hex,
        lambda: (start + datetime.timedelta(seconds=rng.randint(0, 10**8))).isoformat(),
        lambda: str(int((start + datetime.timedelta(seconds=rng.randint(0, 10**8))).timestamp() * 1000)),
        lambda: f"ORD-{rng.randint(2020, 2026)}-{rng.randint(0, 10**6):06d}",
        lambda: f"order #{rng.randint(10**8, 10**10)} placed",
        lambda: f"INV-{rng.randint(10**5, 10**6)}-{rng.randint(10, 99)}",
        lambda: f"1Z{_rand(rng, 6, string.ascii_uppercase + string.digits)}{rng.randint(10**9, 10**10)}",
        lambda: f"{rng.getrandbits(160):040x}",
        lambda: f"user {rng.randint(1, 10**7)} paid {rng.randint(1, 999)}.{rng.randint(0, 99):02d} EUR",
        lambda: f"GET /api/orders/{rng.randint(1, 10**9)}/?page={rng.randint(1, 50)}&sort=created_at",
        lambda: f"+1 555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
        lambda: f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}:{rng.randint(1024, 65535)}",
        lambda: f"v{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)} build {rng.randint(10**6, 10**7)}",
        lambda: f"token_count={rng.randint(0, 5000)} session_length={rng.randint(0, 999)}s",
        lambda: (
            f"{rng.randint(2020, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        ),
    ]
    return [makers[i % len(makers)]() for i in range(5_000)]


def test_false_positives_at_most_one_in_a_thousand() -> None:
    masker = Masker()
    values = look_alikes()
    assert len(values) == 5_000
    changed = [value for value in values if masker.mask_text(value) != value]
    assert len(changed) <= 5, changed[:20]


def test_recursion_caps() -> None:
    masker = Masker(max_depth=3, max_items=5, max_string=50)
    deep: dict[str, object] = {"a": {"b": {"c": {"password": "x"}}}}
    assert masker.mask(deep) == {"a": {"b": {"c": "[TRUNCATED]"}}}
    assert masker.mask(list(range(10)))[-1] == "[TRUNCATED]"
    assert masker.mask("y" * 100).endswith("[TRUNCATED]")
    cyclic: list[object] = []
    cyclic.append(cyclic)
    assert "[TRUNCATED]" in json.dumps(masker.mask(cyclic))


def test_key_rules() -> None:
    masker = Masker()
    for key in (
        "password",
        "DB_PASSWORD",
        "api_token",
        "access_token",
        "X-Api-Key",
        "Authorization",
        "sessionid",
        "session_id",
        "card_number",
        "client_secret",
        "Set-Cookie",
    ):
        assert masker.is_sensitive_key(key), key
    for key in ("token_count", "card_id", "X-Token-Count", "user_id", "message", "created_at", "password_expires_at"):
        assert not masker.is_sensitive_key(key), key
