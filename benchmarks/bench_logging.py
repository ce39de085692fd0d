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
   Figure: p50 latency of a round of in-process WSGI requests, the two configurations taking
   turns request by request.

Run with ``make bench`` (or ``python benchmarks/bench_logging.py`` with the services' env set).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import SMOKE, Worker, compare, interleaved, own_database, sized, wait_for_replay

RECORDS_PER_ROUND = sized(20_000, 200)
DISTINCT_RECORDS = sized(20_000, 300)
# A round sends its requests to the two configurations in turn (harness.interleaved), so the load
# of a busy machine, which drifts over seconds, moves both alike.
REQUESTS_PER_ROUND = sized(150, 5)
REQUEST_ROUNDS = 15
WARM_UP_REQUESTS = sized(100, 3)
WORKER_VAR = "SCALEOPS_BENCH_LOGGING_WORKER"
HAND_SDKS_VAR = "SCALEOPS_BENCH_HAND_SDKS"
# "dropped": the worker sends only request IDs that the shared 10% decision drops.
REQUESTS_VAR = "SCALEOPS_BENCH_REQUESTS"


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
    """CPU time of this thread per record: formatting is pure CPU, and the wall clock of a shared
    machine also counts the time other processes held the core."""
    size = len(records)
    started = time.thread_time()
    for index in range(count):
        formatter.format(records[index % size])
    return (time.thread_time() - started) / count * 1e6


def bench_records() -> None:
    from pythonjsonlogger.json import JsonFormatter as PlainJsonFormatter

    from django_scaleops.logging import JsonFormatter, Masker

    ours = JsonFormatter(masker=Masker())
    stdlib_json = JsonFormatter(masker=Masker(), use_orjson=False)
    peer = PlainJsonFormatter("%(levelname)s %(name)s %(message)s", timestamp=True)
    records = sample_records()
    for formatter in (ours, peer):
        time_formatter(formatter, records, sized(2_000, 20))  # warm-up
    compare(
        f"Log record formatting, {len(records):,} varied realistic records ({RECORDS_PER_ROUND:,} a round), CPU",
        lambda: time_formatter(ours, records, RECORDS_PER_ROUND),
        lambda: time_formatter(peer, records, RECORDS_PER_ROUND),
        unit="µs/record",
        higher_is_better=False,
        ours_name="ours (schema + masking)",
        peer_name="python-json-logger plain",
        target=1.0,
        key="logging.format_masked_vs_python_json_logger",
    )
    # Every record different, more of them than the masker remembers: no answer is reused.
    distinct = sample_records(DISTINCT_RECORDS)
    compare(
        f"Log record formatting, {len(distinct):,} records all different (no cached masking), CPU",
        lambda: time_formatter(JsonFormatter(masker=Masker()), distinct, len(distinct)),
        lambda: time_formatter(peer, distinct, len(distinct)),
        rounds=7,
        unit="µs/record",
        higher_is_better=False,
        ours_name="ours (schema + masking)",
        peer_name="python-json-logger plain",
        target=1.0,
        key="logging.format_masked_uncached_vs_python_json_logger",
    )
    # The same without orjson (the extra not installed): the json module's encoder, made once.
    compare(
        f"Log record formatting without orjson, {len(records):,} varied realistic records, CPU",
        lambda: time_formatter(stdlib_json, records, RECORDS_PER_ROUND),
        lambda: time_formatter(peer, records, RECORDS_PER_ROUND),
        unit="µs/record",
        higher_is_better=False,
        ours_name="ours, json module (no orjson)",
        peer_name="python-json-logger plain",
        # No target: the goal holds with the orjson extra; this shows what is left without it.
        target=None,
        key="logging.format_masked_stdlib_json_vs_python_json_logger",
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


def example_environ(path: str, request_id: str) -> dict[str, Any]:
    """The WSGI environ of one GET of the example API's message page, with its own request ID."""
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "limit=50",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_X_REQUEST_ID": request_id,
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


def example_path() -> str:
    """The path the request rounds ask for: the first conversation's messages."""
    from example_project.chat.models import Conversation

    conversation = Conversation.objects.order_by("id").values_list("id", flat=True).first()
    return f"/api/conversations/{conversation}/messages/"


def example_application() -> tuple[TextIO, Any, str]:
    """A worker's example API: the stream its figures go to, the WSGI application and the path
    the rounds ask for. Log lines (written to stdout by the LOGGING helper) are formatted as usual
    but discarded; stdout proper carries only the figures to the harness."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    from django.core.wsgi import get_wsgi_application

    results = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the worker
    return results, get_wsgi_application(), example_path()


def is_dropped(request_id: str, path: str) -> bool:
    """Whether the shared decision drops this request (what the middleware will decide)."""
    from django_scaleops.apm import sampling

    return not sampling.should_sample(request_id, path)


def run_worker() -> None:
    """One configuration of the example API; answers each count with the p50 latency in µs."""
    if os.environ.get(HAND_SDKS_VAR):
        setup_sdks_by_hand()
    results, application, path = example_application()
    only_dropped = os.environ.get(REQUESTS_VAR) == "dropped"
    sent = 0
    for line in sys.stdin:
        timings = []
        for _ in range(int(line)):
            sent += 1
            # Chosen before the clock starts: the same decision the middleware makes.
            while only_dropped and not is_dropped(f"bench-{sent}", path):
                sent += 1
            started = time.perf_counter()
            body = application(example_environ(path, f"bench-{sent}"), start_response)
            b"".join(body)
            getattr(body, "close", lambda: None)()
            timings.append(time.perf_counter() - started)
        print(statistics.median(timings) * 1e6, file=results, flush=True)


def prepare_example() -> None:
    """The example's tables and data: bench_example_api's, or a few rows under smoke mode."""
    from benchmarks.bench_example_api import prepare

    if not SMOKE:
        prepare()
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    with open(os.devnull, "w") as quiet:
        call_command("seed_demo_data", messages=50, conversations=2, stdout=quiet)
    wait_for_replay()


@contextlib.contextmanager
def vendor_sink() -> Iterator[dict[str, str]]:
    """A local endpoint for both SDKs (a :class:`Sink`); yields the environment pointing a worker's
    Sentry and ddtrace at it, with ddtrace's telemetry and remote configuration off."""
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        yield {
            "SENTRY_DSN": f"http://public@127.0.0.1:{sink.server_port}/1",
            "DD_TRACE_AGENT_URL": f"http://127.0.0.1:{sink.server_port}",
            "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",
            "DD_REMOTE_CONFIGURATION_ENABLED": "false",
        }
    finally:
        sink.shutdown()


def bench_requests() -> None:
    prepare_example()
    with vendor_sink() as vendors:
        compare_requests(vendors)


def compare_requests(vendors: dict[str, str]) -> None:
    common = {WORKER_VAR: "1", "DJANGO_DEBUG": "0"}
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
    # Both SDKs at 10%, every request one the decision drops: it should cost what logging alone does.
    dropped = Worker(
        "bench_logging.py",
        {**common, **vendors, "EXAMPLE_SCALEOPS": "1", "SCALEOPS_APM_ENABLED": "sentry,datadog"}
        | {REQUESTS_VAR: "dropped"},
    )
    logging_only = Worker("bench_logging.py", {**common, "EXAMPLE_SCALEOPS": "1"})
    bare = Worker("bench_logging.py", {**common, "EXAMPLE_SCALEOPS": "0"})
    workers = (ours, dropped, vendor_tracing, by_hand, logging_only, bare)
    try:
        for worker in workers:
            worker.round(WARM_UP_REQUESTS)  # warm-up: imports, connections, URL resolver, SDK threads
        title = (
            f"Example API request, p50 latency ({REQUESTS_PER_ROUND} in-process WSGI requests a round,"
            " each side in turn)"
        )
        # (ours, its name), (peer, its name), target, key. Targets: the APM goal is +10% of bare
        # at most (0.909); "vendor" is held to the earlier +15%; the SDKs set up by hand are the
        # peer's own figure (no target: nothing of ours runs there).
        comparisons: list[tuple[tuple[Worker, str], tuple[Worker, str], float | None, str]] = [
            ((logging_only, "middleware + JSON log, no APM"), (bare, "bare Django"), 0.909, "logging_vs_bare"),
            (
                (ours, "middleware + JSON log + Sentry + Datadog at 10%"),
                (bare, "bare Django"),
                0.909,
                "apm_10pct_vs_bare",
            ),
            (
                (dropped, "Sentry + Datadog at 10%, a dropped request"),
                (logging_only, "middleware + JSON log, no APM"),
                1.0,
                "apm_dropped_vs_logging",
            ),
            ((vendor_tracing, 'the same, REQUEST_TRACING="vendor"'), (bare, "bare Django"), 0.87, "apm_vendor_vs_bare"),
            (
                (ours, "ours: SDKs through SCALEOPS_APM_*"),
                (by_hand, "the same SDKs set up by hand, 10%"),
                1.0,
                "apm_ours_vs_by_hand",
            ),
            ((by_hand, "SDKs set up by hand at 10%"), (bare, "bare Django"), None, "apm_by_hand_vs_bare"),
        ]
        for (first, ours_name), (second, peer_name), target, key in comparisons:
            first_round, second_round = interleaved(
                functools.partial(first.round, 1), functools.partial(second.round, 1), REQUESTS_PER_ROUND
            )
            compare(
                title,
                first_round,
                second_round,
                rounds=REQUEST_ROUNDS,
                unit="µs p50",
                higher_is_better=False,
                ours_name=ours_name,
                peer_name=peer_name,
                target=target,
                key=f"logging.request_{key}",
            )
    finally:
        for worker in workers:
            worker.close()


def main() -> None:
    if os.environ.get(WORKER_VAR):
        run_worker()
        return
    bench_records()
    bench_requests()


if __name__ == "__main__":
    own_database("logging")
    main()
