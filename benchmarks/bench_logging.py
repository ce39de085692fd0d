"""Observability overhead, ours vs the peer in the same run.

1. Per log record: our ``JsonFormatter`` (schema, request ID, two-layer masking) vs
   python-json-logger's plain ``JsonFormatter``, on a mix of realistic records (µs/record): 1,024
   of them in turn (log text repeats, and the masker remembers recent answers), then 20,000 all
   different (no answer remembered: the masker's full cost on every string).
2. Per request: the example API with the correlation middleware, JSON request logging, and both
   Sentry and Datadog at the production rate (10%) vs bare Django (no middleware, no APM); the same
   with ``SCALEOPS_APM_REQUEST_TRACING = "vendor"`` (the SDKs' own Django integrations); and vs
   the same two SDKs set up by hand (``sentry_sdk.init(traces_sample_rate=0.1)`` and
   ``ddtrace.patch(...)`` with a 10% sampling rule, default options). The SDKs send to a local sink
   that answers 200 (and ``/info`` as a Datadog agent 7 does), so nothing leaves the machine.
   Figure: p50 latency of a round of in-process WSGI requests.

Run with ``make bench`` (or ``python benchmarks/bench_logging.py`` with the services' env set).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import Worker, compare, own_database

RECORDS_PER_ROUND = 20_000
REQUESTS_PER_ROUND = 300
WORKER_VAR = "SCALEOPS_BENCH_LOGGING_WORKER"
HAND_SDKS_VAR = "SCALEOPS_BENCH_HAND_SDKS"


def sample_records(count: int = 1024) -> list[logging.LogRecord]:
    """Realistic records with varying values (IDs, durations, paths), so no cache sees repeats only."""
    rng = random.Random(1)

    def record(msg: str, args: tuple[Any, ...] = (), **extra: Any) -> logging.LogRecord:
        item = logging.LogRecord("example.chat", logging.INFO, __file__, 10, msg, args, None)
        item.__dict__.update(extra)
        return item

    def request_line() -> logging.LogRecord:
        path = f"/api/conversations/{rng.randint(1, 10**5)}/messages/"
        duration = round(rng.uniform(1, 80), 2)
        return record(
            "%s %s %s %.1fms",
            ("GET", path, 200, duration),
            method="GET",
            path=path,
            status=200,
            duration_ms=duration,
            user_id=rng.randint(1, 10**6),
            api_key_prefix="k3F9aQ",
            bytes=rng.randint(100, 10**5),
        )

    makers = [
        request_line,
        lambda: record("user %s created conversation %s", (rng.randint(1, 10**6), rng.randint(1, 10**5))),
        lambda: record("cache miss for %s", (f"conv:{rng.randint(1, 10**5)}:messages:v3",)),
        lambda: record(
            "message stored",
            conversation_id=rng.randint(1, 10**5),
            payload={"title": f"Launch {rng.randint(1, 99)}", "participants": [1, 2, rng.randint(3, 999)]},
        ),
    ]
    return [makers[index % len(makers)]() for index in range(count)]


def time_formatter(formatter: logging.Formatter, records: list[logging.LogRecord], count: int) -> float:
    size = len(records)
    started = time.perf_counter()
    for index in range(count):
        formatter.format(records[index % size])
    return (time.perf_counter() - started) / count * 1e6


def bench_records() -> None:
    from pythonjsonlogger.json import JsonFormatter as PlainJsonFormatter

    from django_scaleops.logging import JsonFormatter, Masker

    ours = JsonFormatter(masker=Masker())
    peer = PlainJsonFormatter("%(levelname)s %(name)s %(message)s", timestamp=True)
    records = sample_records()
    for formatter in (ours, peer):
        time_formatter(formatter, records, 2_000)  # warm-up
    compare(
        f"Log record formatting, {len(records):,} varied realistic records ({RECORDS_PER_ROUND:,} a round)",
        lambda: time_formatter(ours, records, RECORDS_PER_ROUND),
        lambda: time_formatter(peer, records, RECORDS_PER_ROUND),
        unit="µs/record",
        higher_is_better=False,
        ours_name="ours (schema + masking)",
        peer_name="python-json-logger plain",
    )
    # Every record different, more of them than the masker remembers: no answer is reused.
    distinct = sample_records(RECORDS_PER_ROUND)
    compare(
        f"Log record formatting, {len(distinct):,} records all different (no cached masking)",
        lambda: time_formatter(JsonFormatter(masker=Masker()), distinct, len(distinct)),
        lambda: time_formatter(peer, distinct, len(distinct)),
        rounds=7,
        unit="µs/record",
        higher_is_better=False,
        ours_name="ours (schema + masking)",
        peer_name="python-json-logger plain",
    )


# What a Datadog agent 7 answers on /info: the endpoints the tracer may use.
AGENT_INFO = json.dumps(
    {
        "version": "7.60.0",
        "endpoints": ["/v0.4/traces", "/v0.5/traces", "/v0.6/stats", "/v0.7/config", "/info"],
        "client_drop_p0s": True,
    }
).encode()


class Sink(BaseHTTPRequestHandler):
    """Accepts whatever Sentry and the Datadog tracer send."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _ok(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        body = AGENT_INFO if self.path.startswith("/info") else b'{"rate_by_service":{}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_GET = _ok


def setup_sdks_by_hand() -> None:
    """The peer: both SDKs as a user would set them up without us, at the same 10% rate.

    Default options; the same Django, psycopg, Redis and HTTP integrations as ours.
    """
    import ddtrace
    import sentry_sdk

    sentry_sdk.init(dsn=os.environ["SENTRY_DSN"], traces_sample_rate=0.1, environment="production")
    ddtrace.patch(django=True, psycopg=True, redis=True, requests=True, httplib=True, urllib3=True)


def run_worker() -> None:
    """One configuration of the example API; answers each count with the p50 latency in µs."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    from io import BytesIO

    from django.core.wsgi import get_wsgi_application

    if os.environ.get(HAND_SDKS_VAR):
        setup_sdks_by_hand()

    # Log lines (written to stdout by the LOGGING helper) are formatted as usual but discarded;
    # stdout proper carries only the figures to the harness.
    results = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the worker
    application = get_wsgi_application()
    from example_project.chat.models import Conversation

    conversation = Conversation.objects.order_by("id").values_list("id", flat=True).first()
    path = f"/api/conversations/{conversation}/messages/"

    def environ(index: int) -> dict[str, Any]:
        return {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "QUERY_STRING": "limit=50",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_X_REQUEST_ID": f"bench-{index}",
            "wsgi.input": BytesIO(),
            "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http",
            "wsgi.version": (1, 0),
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        if not status.startswith("200"):
            raise SystemExit(f"unexpected status {status}")
        return None

    sent = 0
    for line in sys.stdin:
        timings = []
        for _ in range(int(line)):
            sent += 1
            started = time.perf_counter()
            body = application(environ(sent), start_response)
            b"".join(body)
            getattr(body, "close", lambda: None)()
            timings.append(time.perf_counter() - started)
        print(statistics.median(timings) * 1e6, file=results, flush=True)


def bench_requests() -> None:
    from benchmarks.bench_example_api import prepare

    prepare()
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    sink_url = f"http://127.0.0.1:{sink.server_port}"
    common = {WORKER_VAR: "1", "DJANGO_DEBUG": "0"}
    vendors = {
        "SENTRY_DSN": f"http://public@127.0.0.1:{sink.server_port}/1",
        "DD_TRACE_AGENT_URL": sink_url,
        "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",
        "DD_REMOTE_CONFIGURATION_ENABLED": "false",
    }
    ours = Worker(
        "bench_logging.py", {**common, **vendors, "EXAMPLE_SCALEOPS": "1", "SCALEOPS_APM_ENABLED": "sentry,datadog"}
    )
    vendor_tracing = Worker(
        "bench_logging.py",
        {
            **common,
            **vendors,
            "EXAMPLE_SCALEOPS": "1",
            "SCALEOPS_APM_ENABLED": "sentry,datadog",
            "SCALEOPS_APM_REQUEST_TRACING": "vendor",
        },
    )
    # Our middleware and logging, but the SDKs set up by hand (the peer for the APM part).
    by_hand = Worker(
        "bench_logging.py",
        {
            **common,
            **vendors,
            "EXAMPLE_SCALEOPS": "1",
            HAND_SDKS_VAR: "1",
            "DD_SERVICE": "example-chat",
            "DD_ENV": "production",
            "DD_TRACE_SAMPLING_RULES": '[{"sample_rate": 0.1}]',
        },
    )
    logging_only = Worker("bench_logging.py", {**common, "EXAMPLE_SCALEOPS": "1"})
    bare = Worker("bench_logging.py", {**common, "EXAMPLE_SCALEOPS": "0"})
    workers = (ours, vendor_tracing, by_hand, logging_only, bare)
    try:
        for worker in workers:
            worker.round(100)  # warm-up: imports, connections, URL resolver, SDK threads
        title = f"Example API request, p50 latency ({REQUESTS_PER_ROUND} in-process WSGI requests a round)"
        comparisons = [
            ((logging_only, "middleware + JSON log, no APM"), (bare, "bare Django")),
            ((ours, "middleware + JSON log + Sentry + Datadog at 10%"), (bare, "bare Django")),
            ((vendor_tracing, 'the same, REQUEST_TRACING="vendor"'), (bare, "bare Django")),
            ((ours, "ours: SDKs through SCALEOPS_APM_*"), (by_hand, "the same SDKs set up by hand, 10%")),
            ((by_hand, "SDKs set up by hand at 10%"), (bare, "bare Django")),
        ]
        for (first, ours_name), (second, peer_name) in comparisons:
            compare(
                title,
                functools.partial(first.round, REQUESTS_PER_ROUND),
                functools.partial(second.round, REQUESTS_PER_ROUND),
                rounds=7,
                unit="µs p50",
                higher_is_better=False,
                ours_name=ours_name,
                peer_name=peer_name,
            )
    finally:
        for worker in workers:
            worker.close()
        sink.shutdown()


def main() -> None:
    if os.environ.get(WORKER_VAR):
        run_worker()
        return
    bench_records()
    bench_requests()


if __name__ == "__main__":
    own_database("logging")
    main()
