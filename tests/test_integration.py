"""Capabilities working together through one request: the correlation ID reaches the request
log, the slow-query lines and the rate-limit identity, and secrets stay out of all of them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import Client, override_settings

from django_scaleops.logging import JsonFormatter
from tests.test_monitoring import monitoring  # noqa: F401
from tests.test_ratelimit import clean_state, make_key  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.installed]

STACK = override_settings(
    MIDDLEWARE=[
        "django_scaleops.logging.middleware.CorrelationIdMiddleware",
        "django_scaleops.ratelimit.middleware.ApiKeyThrottleMiddleware",
        *settings.MIDDLEWARE,
    ]
)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Request and slow-query log records, formatted as the JSON lines a user ships."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    loggers = [logging.getLogger(name) for name in ("django_scaleops.request", "django_scaleops.monitoring.slow")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


@STACK
def test_one_request_id_in_the_header_the_request_line_and_every_slow_query(captured, monitoring):  # noqa: F811
    api_key, secret = make_key("Standard")
    with override_settings(SCALEOPS_MONITOR_SLOW_QUERY_MS=0):  # every query counts as slow here
        response = Client().get("/api/conversations/", HTTP_X_API_KEY=secret, HTTP_X_REQUEST_ID="req-42.a:b")
    assert response.status_code == 200
    assert response["X-Request-ID"] == "req-42.a:b"
    output = captured.getvalue()
    assert secret not in output
    lines = [json.loads(line) for line in output.splitlines()]
    slow = [line for line in lines if "slow_query" in line["message"]]
    requests = [line for line in lines if line["logger"] == "django_scaleops.request"]
    assert slow, "the view's queries should be logged as slow with a 0 ms threshold"
    assert {line["request_id"] for line in slow} == {"req-42.a:b"}
    assert len(requests) == 1
    assert requests[0]["request_id"] == "req-42.a:b"
    assert requests[0]["api_key_prefix"] == api_key.prefix
    assert requests[0]["status"] == 200


@STACK
def test_a_hostile_request_id_is_replaced_and_never_logged(captured):
    hostile = "x\r\nSet-Cookie: a=b"
    response = Client().get("/api/conversations/", HTTP_X_REQUEST_ID=hostile)
    assert response["X-Request-ID"] != hostile
    assert "Set-Cookie" not in captured.getvalue()
    (line,) = (json.loads(raw) for raw in captured.getvalue().splitlines())
    assert line["request_id"] == response["X-Request-ID"]
