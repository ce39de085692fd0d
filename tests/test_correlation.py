"""Correlation ID middleware: safe IDs only, never reflected, no bleed between concurrent requests."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import random
import string
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.test import AsyncClient, AsyncRequestFactory, Client, RequestFactory, override_settings
from django.urls import path
from django.utils.functional import SimpleLazyObject

from django_scaleops.context import (
    api_key_prefix_var,
    get_request_id,
    is_safe_request_id,
    request_id_scope,
    request_id_var,
    task_headers,
    with_request_id,
)
from django_scaleops.logging import JsonFormatter
from django_scaleops.logging.middleware import CorrelationIdMiddleware

SAFE_CHARS = string.ascii_letters + string.digits + "._:-"


async def async_echo(request: HttpRequest) -> HttpResponse:
    before = get_request_id()
    for _ in range(3):
        await asyncio.sleep(0)
    return HttpResponse(f"{before}|{get_request_id()}")


def sync_echo(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"{get_request_id()}|{request.request_id}")  # type: ignore[attr-defined]


# This module is also the URLconf of the full-stack tests below.
urlpatterns = [path("async-echo/", async_echo), path("sync-echo/", sync_echo)]
FULL_STACK = override_settings(
    ROOT_URLCONF="tests.test_correlation",
    MIDDLEWARE=[
        "django_scaleops.logging.middleware.CorrelationIdMiddleware",
        "django.middleware.common.CommonMiddleware",
    ],
)


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Every record of our request logger, formatted by our JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("django_scaleops.request")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def echo_view(request: HttpRequest) -> HttpResponse:
    # The view sees the ID through the ContextVar, and logs with it.
    logging.getLogger("django_scaleops.request").info("in view", extra={"seen": get_request_id()})
    return HttpResponse(get_request_id() or "")


def hostile_values(count: int) -> list[str]:
    rng = random.Random(3)
    samples = [
        "abc\r\nSet-Cookie: pwned=1",
        "x" * 8192,
        "x" * 129,
        "",
        " ",
        '"quoted"',
        "'single'",
        "<script>alert(1)</script>",
        "id;rm -rf /",
        "ünïcödé",
        "😀",
        "a b",
        "a\tb",
        "a\x00b",
        "../../etc/passwd",
        "%0d%0aX: y",
        "{}",
        "a,b",
    ]
    values = list(samples)
    alphabet = "\r\n\t\x00\"'<>;,{} /\\%😀ü\u202e" + SAFE_CHARS
    while len(values) < count:
        length = rng.choice([1, 5, 32, 64, 128, 129, 300, 8192])
        value = "".join(rng.choice(alphabet) for _ in range(min(length, 400)))
        if length == 8192:
            value = (value * 25)[:8192]
        values.append(value)
    return values


def valid_values(count: int) -> list[str]:
    rng = random.Random(4)
    return ["".join(rng.choice(SAFE_CHARS) for _ in range(rng.randint(1, 128))) for _ in range(count)]


def test_fuzzed_headers_never_reflected_and_logs_stay_json(log_lines: io.StringIO) -> None:
    middleware = CorrelationIdMiddleware(echo_view)
    factory = RequestFactory()
    hostile = hostile_values(10_000)
    rejected = 0
    for value in hostile:
        # WSGI hands header values over as latin-1 decoded strings.
        wire = value.encode("utf-8").decode("latin-1")
        response = middleware(factory.get("/api/x/", HTTP_X_REQUEST_ID=wire))
        echoed = response["X-Request-ID"]
        if is_safe_request_id(wire):
            assert echoed == wire
            continue
        rejected += 1
        assert echoed != wire
        assert is_safe_request_id(echoed) and len(echoed) == 32
        assert response.content.decode() == echoed
    assert rejected > 8_000
    lines = log_lines.getvalue().splitlines()
    assert len(lines) == 2 * len(hostile)
    dangerous = {v.encode("utf-8").decode("latin-1") for v in hostile if not is_safe_request_id(v) and len(v) > 3}
    for line in lines:
        record = json.loads(line)
        assert is_safe_request_id(record["request_id"])
        assert record["request_id"] not in dangerous
    # No rejected value appears anywhere in the log text (a sample: substring search is slow).
    text = log_lines.getvalue()
    assert "pwned" not in text and "<script>" not in text and "rm -rf" not in text
    sample = random.Random(5).sample(sorted(v for v in dangerous if len(v) > 8), 300)
    assert not any(v in text or json.dumps(v)[1:-1] in text for v in sample)


def test_valid_ids_preserved_byte_for_byte(log_lines: io.StringIO) -> None:
    middleware = CorrelationIdMiddleware(echo_view)
    factory = RequestFactory()
    for value in valid_values(2_000):
        response = middleware(factory.get("/api/x/", HTTP_X_REQUEST_ID=value))
        assert response["X-Request-ID"] == value
        assert response.content.decode() == value
    # The second configured header is read too.
    response = middleware(factory.get("/api/x/", HTTP_X_CORRELATION_ID="from-correlation-header"))
    assert response["X-Request-ID"] == "from-correlation-header"
    assert request_id_var.get() is None


def test_request_log_line_fields_and_exclusions(log_lines: io.StringIO) -> None:
    middleware = CorrelationIdMiddleware(lambda request: HttpResponse(b"x" * 1234, status=201))
    factory = RequestFactory()
    middleware(factory.post("/api/items/", HTTP_X_REQUEST_ID="req-1"))
    middleware(factory.get("/health/ready"))
    with override_settings(SCALEOPS_LOG_REQUEST_LEVEL="DEBUG"):
        middleware(factory.get("/api/quiet/"))  # below the logger's INFO level: not written
    records = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    assert len(records) == 1
    record = records[0]
    assert record["request_id"] == "req-1"
    assert (record["method"], record["path"], record["status"], record["bytes"]) == ("POST", "/api/items/", 201, 1234)
    assert record["duration_ms"] >= 0
    assert record["user_id"] is None and record["api_key_prefix"] is None
    assert record["level"] == "INFO" and record["logger"] == "django_scaleops.request"
    assert record["timestamp"].endswith("+00:00")


def test_request_line_names_a_loaded_user_and_the_api_key_prefix(log_lines: io.StringIO) -> None:
    def view(request: HttpRequest) -> HttpResponse:
        request.user = SimpleLazyObject(lambda: SimpleNamespace(pk=42, is_authenticated=True))  # type: ignore[assignment]
        str(request.user.pk)  # something (auth, a view) loaded the user
        api_key_prefix_var.set("k3F9aQ")
        return HttpResponse("ok")

    def lazy_view(request: HttpRequest) -> HttpResponse:
        request.user = SimpleLazyObject(lambda: pytest.fail("the middleware must not load the user"))  # type: ignore[assignment]
        return HttpResponse("ok")

    factory = RequestFactory()
    CorrelationIdMiddleware(view)(factory.get("/api/me/"))
    assert api_key_prefix_var.get() is None  # not carried over to the next request
    CorrelationIdMiddleware(lazy_view)(factory.get("/api/lazy/"))
    first, second = (json.loads(line) for line in log_lines.getvalue().splitlines())
    assert (first["user_id"], first["api_key_prefix"]) == (42, "k3F9aQ")
    assert (second["user_id"], second["api_key_prefix"]) == (None, None)


def test_streaming_response_keeps_id_while_streaming_and_logs_after(log_lines: io.StringIO) -> None:
    seen: list[str | None] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(3):
            seen.append(get_request_id())
            yield b"abcd"

    middleware = CorrelationIdMiddleware(lambda request: StreamingHttpResponse(chunks()))
    response = middleware(RequestFactory().get("/stream/", HTTP_X_REQUEST_ID="stream-1"))
    assert request_id_var.get() is None
    assert log_lines.getvalue() == ""  # nothing logged until the body has gone
    body = b"".join(response.streaming_content)
    assert body == b"abcd" * 3
    assert seen == ["stream-1"] * 3
    assert request_id_var.get() is None
    record = json.loads(log_lines.getvalue())
    assert (record["request_id"], record["bytes"]) == ("stream-1", 12)


def test_async_streaming_response(log_lines: io.StringIO) -> None:
    seen: list[str | None] = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            await asyncio.sleep(0)
            seen.append(get_request_id())
            yield b"xyz"

    async def view(request: HttpRequest) -> StreamingHttpResponse:
        return StreamingHttpResponse(chunks())

    middleware = CorrelationIdMiddleware(view)

    async def run() -> bytes:
        response = await middleware(AsyncRequestFactory().get("/s/", headers={"X-Request-ID": "astream-1"}))
        assert request_id_var.get() is None and log_lines.getvalue() == ""
        return b"".join([chunk async for chunk in response.streaming_content])

    assert asyncio.run(run()) == b"xyz" * 3
    assert seen == ["astream-1"] * 3
    record = json.loads(log_lines.getvalue())
    assert (record["request_id"], record["bytes"]) == ("astream-1", 9)


def test_context_reset_after_exception() -> None:
    def boom(request: HttpRequest) -> HttpResponse:
        raise RuntimeError("boom")

    middleware = CorrelationIdMiddleware(boom)
    with pytest.raises(RuntimeError):
        middleware(RequestFactory().get("/x/", HTTP_X_REQUEST_ID="err-1"))
    assert request_id_var.get() is None


def test_1000_concurrent_wsgi_requests_do_not_bleed() -> None:
    barrier = threading.Barrier(50)

    def view(request: HttpRequest) -> HttpResponse:
        before = get_request_id()
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=5)  # maximise overlap between requests
        return HttpResponse(f"{before}|{get_request_id()}")

    middleware = CorrelationIdMiddleware(view)
    factory = RequestFactory()

    def one(index: int) -> tuple[str, str, str]:
        wanted = f"wsgi-{index}"
        response = middleware(factory.get("/x/", HTTP_X_REQUEST_ID=wanted))
        return wanted, response.content.decode(), response["X-Request-ID"]

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(1_000)))
    for wanted, body, header in results:
        assert body == f"{wanted}|{wanted}"
        assert header == wanted


def test_1000_concurrent_asgi_requests_do_not_bleed() -> None:
    async def view(request: HttpRequest) -> HttpResponse:
        before = get_request_id()
        for _ in range(3):
            await asyncio.sleep(0)  # interleave with the other requests
        return HttpResponse(f"{before}|{get_request_id()}")

    middleware = CorrelationIdMiddleware(view)
    factory = AsyncRequestFactory()

    async def one(index: int) -> tuple[str, str, str]:
        wanted = f"asgi-{index}"
        response = await middleware(factory.get("/x/", headers={"X-Request-ID": wanted}))
        return wanted, response.content.decode(), response["X-Request-ID"]

    async def all_at_once() -> list[tuple[str, str, str]]:
        return await asyncio.gather(*(one(i) for i in range(1_000)))

    results = asyncio.run(all_at_once())
    for wanted, body, header in results:
        assert body == f"{wanted}|{wanted}"
        assert header == wanted


@pytest.mark.django_db
def test_async_client_through_full_stack(async_client) -> None:
    with override_settings(
        MIDDLEWARE=["django_scaleops.logging.middleware.CorrelationIdMiddleware"],
    ):
        response = asyncio.run(async_client.get("/api/conversations/", headers={"X-Request-ID": "full-async"}))
    assert response.status_code == 200
    assert response["X-Request-ID"] == "full-async"


def test_helpers_carry_the_id_as_a_string() -> None:
    with request_id_scope("job-7") as request_id:
        assert request_id == "job-7"
        assert task_headers() == {"request_id": "job-7"}
        with ThreadPoolExecutor(max_workers=2) as pool:
            assert pool.submit(with_request_id(get_request_id)).result() == "job-7"
            # Without the wrapper a pool thread does not see it.
            assert pool.submit(get_request_id).result() is None
    assert get_request_id() is None
    with request_id_scope("bad\r\nvalue") as generated:
        assert generated != "bad\r\nvalue" and is_safe_request_id(generated)
    assert task_headers() == {}


@FULL_STACK
def test_1000_concurrent_requests_through_the_asgi_handler() -> None:
    async def all_at_once() -> list[tuple[str, str, str]]:
        client = AsyncClient()

        async def one(index: int) -> tuple[str, str, str]:
            wanted = f"full-asgi-{index}"
            response = await client.get("/async-echo/", headers={"X-Request-ID": wanted})
            return wanted, response.content.decode(), response["X-Request-ID"]

        return await asyncio.gather(*(one(i) for i in range(1_000)))

    for wanted, body, header in asyncio.run(all_at_once()):
        assert (body, header) == (f"{wanted}|{wanted}", wanted)
    assert request_id_var.get() is None


@FULL_STACK
def test_1000_concurrent_requests_through_the_wsgi_handler() -> None:
    local = threading.local()

    def one(index: int) -> tuple[str, str, str]:
        if not hasattr(local, "client"):
            local.client = Client()
        wanted = f"full-wsgi-{index}"
        response = local.client.get("/sync-echo/", headers={"X-Request-ID": wanted})
        return wanted, response.content.decode(), response["X-Request-ID"]

    with ThreadPoolExecutor(max_workers=32) as pool:
        for wanted, body, header in pool.map(one, range(1_000)):
            assert (body, header) == (f"{wanted}|{wanted}", wanted)
