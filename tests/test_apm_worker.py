"""Subprocess worker for the APM tests (not a test module: SDK setup is process-global).

Run as ``python -m tests.test_apm_worker MODE`` with SCALEOPS_TEST_* variables; it prints one JSON
line with what it sent. The tests then read what arrived at the local Sentry endpoint and at the
Datadog test agent.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path

SECRETS_FILE_VAR = "SCALEOPS_TEST_SECRETS"


def labelled_secrets() -> list[str]:
    """Each secret of the corpus as code would write it: a password only ever next to its key."""
    pairs = json.loads(os.environ.get(SECRETS_FILE_VAR, "[]"))
    return [f"password={secret}" if kind == "password" else f"note={secret}" for kind, secret in pairs]


def traced_view(request: HttpRequest) -> HttpResponse:
    import requests
    from django.core.cache import cache
    from django.db import connection

    from example_project.chat.models import Conversation

    count = Conversation.objects.count()
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::int + 1", [count])
        (value,) = cursor.fetchone()
    cache.set("apm-test", value, 30)
    cached = cache.get("apm-test")
    ping = f"{os.environ['SCALEOPS_TEST_PING_URL']}?request_id={request.headers.get('X-Request-ID', '')}"
    pong = requests.get(ping, timeout=5).text
    logging.getLogger("tests.apm").info("traced view done")
    return JsonResponse({"count": count, "value": value, "cached": cached, "pong": pong})


def boom_view(request: HttpRequest) -> HttpResponse:
    secrets = labelled_secrets()
    api_token = json.loads(os.environ[SECRETS_FILE_VAR])[0][1]  # a local variable Sentry would capture
    logging.getLogger("tests.apm").warning("about to fail with api_token=%s", api_token)
    raise RuntimeError(f"exploded while using {' '.join(secrets)} and api_token={api_token}")


def secrets_view(request: HttpRequest) -> HttpResponse:
    from django.core.cache import cache
    from django.db import connection

    from django_scaleops.apm import current_span, custom_span

    secrets = labelled_secrets()
    with connection.cursor() as cursor:
        for secret in secrets:
            cursor.execute("SELECT '{}'".format(secret.replace("'", "''")))
    for secret in secrets[:50]:
        cache.set(f"k:{secret}", secret, 5)
    with custom_span("secrets.tags", tags={"detail": " ".join(secrets[:20])}):
        current_span().set_tag("more", " ".join(secrets[20:40]))
    logging.getLogger("tests.apm").info("secrets: %s", secrets[:30])
    return HttpResponse("ok")


def plain_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def stream_view(request: HttpRequest) -> StreamingHttpResponse:
    # Its request line is written once the last chunk has gone, after the request's scope.
    return StreamingHttpResponse(iter([b"chunk one ", b"chunk two"]))


urlpatterns = [
    path("traced/", traced_view),
    path("boom/", boom_view),
    path("secrets/", secrets_view),
    path("health/", plain_view),
    path("plain/", plain_view),
    path("stream/", stream_view),
]


def configure() -> None:
    import django
    from django.conf import settings

    from tests import settings as base

    values = {name: getattr(base, name) for name in dir(base) if name.isupper()}
    values["DATABASES"]["default"]["NAME"] = os.environ["SCALEOPS_TEST_DB_NAME"]
    values.update(
        ROOT_URLCONF="tests.test_apm_worker",
        MIDDLEWARE=["django_scaleops.logging.middleware.CorrelationIdMiddleware", *base.MIDDLEWARE],
        DEBUG=False,
        SCALEOPS_APM_ENABLED=os.environ["SCALEOPS_TEST_VENDORS"].split(","),
        SCALEOPS_APM_SENTRY_DSN=os.environ.get("SCALEOPS_TEST_DSN", ""),
        SCALEOPS_APM_DATADOG_AGENT_URL=os.environ.get("SCALEOPS_TEST_AGENT_URL", ""),
        SCALEOPS_APM_SERVICE="scaleops-tests",
        SCALEOPS_APM_ENV="ci",
        SCALEOPS_APM_VERSION="1.2.3",
        SCALEOPS_APM_REQUEST_TRACING=os.environ.get("SCALEOPS_TEST_TRACING", "sampled"),
        LOGGING={
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"json": {"()": "django_scaleops.logging.JsonFormatter"}},
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "filename": os.environ.get("SCALEOPS_TEST_LOG_FILE", os.devnull),
                    "formatter": "json",
                }
            },
            "root": {"handlers": ["file"], "level": "INFO"},
        },
    )
    settings.configure(**values)
    django.setup()


def serve() -> tuple[str, Any]:
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from django.core.wsgi import get_wsgi_application

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, get_wsgi_application(), handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


def get(base: str, route: str, request_id: str | None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """A GET over a bare socket: an instrumented client would make each request a child trace."""
    import socket

    host, port = base.removeprefix("http://").split(":")
    id_header = f"X-Request-ID: {request_id}\r\n" if request_id else ""
    id_header += "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"GET {route} HTTP/1.0\r\nHost: {host}\r\n{id_header}\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:])
    return int(head[0].split()[1]), headers.get("X-Request-ID", "")


def asgi_get(route: str, request_id: str | None = None) -> tuple[int, str]:
    """A GET through Django's ASGI handler (as patched by both SDKs), with or without a request ID."""
    import asyncio

    from asgiref.testing import ApplicationCommunicator
    from django.core.asgi import get_asgi_application

    async def run() -> tuple[int, str]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": route,
            "raw_path": route.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), *([(b"x-request-id", request_id.encode())] if request_id else [])],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 80),
        }
        communicator = ApplicationCommunicator(get_asgi_application(), scope)
        await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await communicator.receive_output(timeout=30)
        headers = {name.decode().lower(): value.decode() for name, value in start["headers"]}
        await communicator.receive_output(timeout=30)
        await communicator.send_input({"type": "http.disconnect"})
        await communicator.wait(timeout=30)
        return int(start["status"]), headers["x-request-id"]

    return asyncio.run(run())


def flush() -> None:
    from django_scaleops.apm import state

    if state.sentry_active:
        import sentry_sdk

        sentry_sdk.flush(timeout=15)
    if state.datadog_active:
        from ddtrace.trace import tracer

        tracer.flush()
        tracer.shutdown(timeout=15)


def scenario() -> dict[str, Any]:
    from django_scaleops.apm import sampling

    base, server = serve()
    handled = _count_sentry_logging_work()
    # IDs picked so that the default production rate (10%) keeps them.
    kept = [f"keep-{i}" for i in range(1000) if sampling.keep(f"keep-{i}", 0.1)]
    report: dict[str, Any] = {}
    report["traced"] = (kept[0], *get(base, "/traced/", kept[0]))
    # Dropped ones, enough that a 10% rule applied in their stead would keep at least one.
    dropped = [f"drop-{i}" for i in range(1000) if not sampling.keep(f"drop-{i}", 0.1)][:40]
    report["traced_dropped"] = [(request_id, *get(base, "/traced/", request_id)) for request_id in dropped]
    report["streamed"] = ("streamed-before-boom", *get(base, "/stream/", "streamed-before-boom"))
    report["boom"] = (kept[1], *get(base, "/boom/", kept[1]))
    # No header: the ID is chosen by Sentry's sampler (before Django) and reused by the middleware.
    report["boom_wsgi_generated"] = get(base, "/boom/", None)
    report["boom_asgi_generated"] = asgi_get("/boom/")
    report["traced_asgi"] = (kept[5], *asgi_get("/traced/", kept[5]))
    report["secrets"] = (kept[2], *get(base, "/secrets/", kept[2]))
    report["health"] = (kept[3], *get(base, "/health/", kept[3]))
    # A caller's Datadog trace is continued (the keep decision stays ours).
    upstream = {"x-datadog-trace-id": "7172", "x-datadog-parent-id": "8283", "x-datadog-sampling-priority": "1"}
    upstream["sentry-trace"] = "771a43a4192642f0b136d5159a501700-a1b2c3d4e5f60718-1"
    report["continued"] = (kept[4], *get(base, "/plain/", kept[4], upstream))
    sampled = [f"samp-{i}" for i in range(int(os.environ.get("SCALEOPS_TEST_SAMPLED", "300")))]
    report["sampled_sent"] = [get(base, "/plain/", request_id)[1] for request_id in sampled]
    report["sampled_expected"] = [r for r in sampled if sampling.keep(r, 0.1)]
    server.shutdown()
    flush()
    report["sentry_logging_work"] = sorted(handled)
    return report


def _count_sentry_logging_work() -> set[str]:
    """The logger names whose records Sentry's logging integration goes on to handle (a breadcrumb,
    an event or a Sentry log), by wrapping its two per-record entry points."""
    handled: set[str] = set()
    try:
        from sentry_sdk.integrations.logging import LoggingIntegration
    except ImportError:
        return handled
    for name in ("_handle_record", "_handle_sentry_logs_record"):
        original = getattr(LoggingIntegration, name, None)
        if original is None:
            continue

        def counting(self: Any, record: Any, _original: Any = original) -> Any:
            handled.add(record.name)
            return _original(self, record)

        setattr(LoggingIntegration, name, counting)
    return handled


def simulate() -> dict[str, Any]:
    """The shared decision over N simulated production requests, as each vendor sees it."""
    import uuid

    from django.test import RequestFactory

    from django_scaleops.apm import state

    count = int(os.environ.get("SCALEOPS_TEST_SIMULATED", "10000"))
    kept: dict[str, list[str]] = {"sentry": [], "datadog": []}
    health_kept = 0
    factory = RequestFactory()
    decide = simulated_by_us if state.request_tracing else simulated_by_vendors
    for _ in range(count):
        request_id = str(uuid.uuid4())
        sentry, datadog = decide(factory.get("/api/messages/", HTTP_X_REQUEST_ID=request_id), request_id)
        for vendor, keep in (("sentry", sentry), ("datadog", datadog)):
            if keep:
                kept[vendor].append(request_id)
        health_kept += any(decide(factory.get("/health/", HTTP_X_REQUEST_ID=request_id), request_id))
    return {"count": count, **kept, "health_kept": health_kept}


def simulated_by_us(request: HttpRequest, request_id: str) -> tuple[bool, bool]:
    """Whether our request tracing opened a sampled Sentry transaction and a kept Datadog root span."""
    from django_scaleops.apm.tracing import RequestTrace

    with RequestTrace(request, request_id) as trace:
        transaction, span = trace.sentry_transaction, trace.dd_span
        sentry = transaction is not None and transaction.sampled is True
        datadog = span is not None and (span.context.sampling_priority or 0) > 0
        trace.response = HttpResponse("ok")
    return sentry, datadog


def simulated_by_vendors(request: HttpRequest, request_id: str) -> tuple[bool, bool]:
    """The same through Sentry's sampler hook and the tags set on ddtrace's root span."""
    from ddtrace.trace import tracer

    from django_scaleops.apm.request import annotate_request
    from django_scaleops.apm.setup import sentry_traces_sampler

    sentry = sentry_traces_sampler({"wsgi_environ": dict(request.META)}) == 1.0
    span = tracer.start_span("django.request", activate=True)
    annotate_request(request_id, request.path)
    datadog = (span.context.sampling_priority or 0) > 0
    span.finish()
    return sentry, datadog


def main() -> None:
    configure()
    mode = sys.argv[1]
    report = scenario() if mode == "scenario" else simulate()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
