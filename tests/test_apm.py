"""APM against real local stand-ins: Datadog's test agent and a loopback Sentry endpoint.

ddtrace patching and ``sentry_sdk.init`` are process-global, so each scenario runs in a
subprocess (tests/test_apm_worker.py) and the tests assert on what arrived.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from django_scaleops.testing.services import free_ports
from tests.test_logging_corpus import secret_core, secret_corpus

# The worker reads the test database: a django_db mark makes pytest-django create it even when
# this module runs alone (it only creates the databases that collected tests ask for).
pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SentryCollector:
    """A tiny Sentry ingestion endpoint: stores every envelope item, answers /ping for the traced view."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self.raw: list[str] = []
        self.pings: dict[str, dict[str, str]] = {}
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                # The traced view's outgoing call: keep the headers it carried, by request ID.
                if self.path.startswith("/ping?request_id="):
                    collector.pings[self.path.split("=", 1)[1]] = {k.lower(): v for k, v in self.headers.items()}
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"pong")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "br":  # sentry-sdk prefers brotli whenever it is installed
                    import brotli  # type: ignore[import-untyped]

                    body = brotli.decompress(body)
                collector.add(body.decode("utf-8", "replace"))
                self.send_response(200)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def add(self, text: str) -> None:
        self.raw.append(text)
        lines = text.split("\n")[1:]
        while lines:
            header = json.loads(lines.pop(0)) if lines[0].strip() else {}
            payload = lines.pop(0) if lines else ""
            if header.get("type"):
                try:
                    self.items.append((header["type"], json.loads(payload)))
                except json.JSONDecodeError:
                    self.items.append((header["type"], {"raw": payload}))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [payload for item_type, payload in self.items if item_type == kind]


@pytest.fixture(scope="module", params=["sampled", "vendor"])
def tracing_mode(request: pytest.FixtureRequest) -> str:
    """SCALEOPS_APM_REQUEST_TRACING: ours (only kept requests instrumented) or the vendors' integrations."""
    mode: str = request.param
    return mode


@pytest.fixture(scope="module")
def sentry_endpoint(tracing_mode: str) -> Iterator[SentryCollector]:
    collector = SentryCollector()
    yield collector
    collector.server.shutdown()


@pytest.fixture(scope="module")
def test_agent(tracing_mode: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # Four distinct ports at once: one at a time, two calls may get the same port (and the agent
    # then fails to bind its second listener).
    port, otlp_http, otlp_grpc, web_ui = free_ports(4)
    log = (tmp_path_factory.mktemp("agent") / "agent.log").open("w")
    process = subprocess.Popen(
        [
            str(BIN / "ddapm-test-agent"),
            "--host=127.0.0.1",
            f"--port={port}",
            f"--otlp-http-port={otlp_http}",
            f"--otlp-grpc-port={otlp_grpc}",
            f"--web-ui-port={web_ui}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/test/session/traces", timeout=1).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                said = Path(log.name).read_text()[-2000:]
                raise RuntimeError(f"ddapm-test-agent did not start:\n{said}") from None
            time.sleep(0.2)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def run_worker(mode: str, env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "tests.test_apm_worker", mode],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",
            "DD_REMOTE_CONFIGURATION_ENABLED": "false",
            "DD_TRACE_STARTUP_LOGS": "false",
            "SCALEOPS_TEST_DB_NAME": connection.settings_dict["NAME"],
            **env,
        },
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def agent_traces(agent: str) -> list[list[dict[str, Any]]]:
    with urllib.request.urlopen(agent + "/test/session/traces", timeout=30) as response:
        traces: list[list[dict[str, Any]]] = json.loads(response.read())
    return traces


def root_of(trace: list[dict[str, Any]]) -> dict[str, Any]:
    return next(span for span in trace if not span.get("parent_id"))


@pytest.fixture(scope="module")
def scenario(
    tracing_mode: str,
    sentry_endpoint: SentryCollector,
    test_agent: str,
    django_db_setup: None,
    django_db_blocker: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    log_file = tmp_path_factory.mktemp("logs") / "app.log"
    corpus = secret_corpus()
    secrets = [secret for _, secret in corpus]
    with django_db_blocker.unblock():
        report = run_worker(
            "scenario",
            {
                "SCALEOPS_TEST_VENDORS": "sentry,datadog",
                "SCALEOPS_TEST_DSN": f"http://public@127.0.0.1:{sentry_endpoint.server.server_port}/1",
                "SCALEOPS_TEST_AGENT_URL": test_agent,
                "SCALEOPS_TEST_PING_URL": sentry_endpoint.url + "/ping",
                "SCALEOPS_TEST_SECRETS": json.dumps(corpus),
                "SCALEOPS_TEST_LOG_FILE": str(log_file),
                "SCALEOPS_TEST_TRACING": tracing_mode,
            },
        )
    report["mode"] = tracing_mode
    # Both SDKs send from background threads; wait until the traces have landed.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        roots = [root_of(t) for t in agent_traces(test_agent) if any(not s.get("parent_id") for s in t)]
        if any(r["meta"].get("request_id") == report["traced"][0] for r in roots):
            break
        time.sleep(0.5)
    report["traces"] = agent_traces(test_agent)
    report["secrets"] = report["secrets"]
    report["secret_values"] = secrets
    report["log_lines"] = [json.loads(line) for line in log_file.read_text().splitlines()]
    return report


def django_roots(report: dict[str, Any]) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    found = {}
    for trace in report["traces"]:
        roots = [span for span in trace if not span.get("parent_id")]
        if roots and roots[0]["name"] == "django.request":
            found[roots[0]["meta"].get("request_id", "")] = (roots[0], trace)
    return found


def test_datadog_request_trace_has_sql_redis_http_children(scenario: dict[str, Any]) -> None:
    request_id, status, header = scenario["traced"]
    assert (status, header) == (200, request_id)
    roots = django_roots(scenario)
    assert request_id in roots, [
        [(s["name"], s.get("parent_id"), s.get("meta", {}).get("request_id")) for s in t][:4]
        for t in scenario["traces"]
    ][:8]
    root, trace = roots[request_id]
    assert root["service"] == "scaleops-tests"
    assert root["meta"]["env"] == "ci" and root["meta"]["version"] == "1.2.3"
    assert root["metrics"]["_sampling_priority_v1"] > 0
    kinds = {span.get("type") for span in trace if span is not root}
    names = {span["name"] for span in trace}
    assert "sql" in kinds, names
    assert "redis" in kinds, names
    assert "http" in kinds, names
    assert any("SELECT %s::int + 1" in span.get("resource", "") for span in trace)
    assert any(span.get("meta", {}).get("env") == "ci" for span in trace if span is not root)


def test_dropped_requests_tell_downstream_and_keep_none_of_their_client_spans(
    scenario: dict[str, Any], sentry_endpoint: SentryCollector
) -> None:
    # The traced view calls out over HTTP (ddtrace's requests integration). A kept request asks
    # the service downstream to keep the trace; a dropped one asks it to drop (priority <= 0),
    # rather than starting a trace of its own that the 10% rule would keep now and then (about
    # four of these forty), and nothing of its trace is kept at the agent.
    kept = sentry_endpoint.pings[scenario["traced"][0]]
    assert int(kept["x-datadog-sampling-priority"]) > 0
    roots = django_roots(scenario)
    dropped_traces = set()
    for request_id, status, header in scenario["traced_dropped"]:
        assert (status, header) == (200, request_id)
        sent = sentry_endpoint.pings[request_id]
        assert int(sent["x-datadog-sampling-priority"]) <= 0, (request_id, sent)
        dropped_traces.add(int(sent["x-datadog-trace-id"]))
        # Ours sends no root span for a dropped request; ddtrace's Django integration ("vendor")
        # sends one marked dropped.
        root = roots.get(request_id)
        if scenario["mode"] == "sampled":
            assert root is None
        else:
            assert root is not None and root[0]["metrics"]["_sampling_priority_v1"] <= 0
    assert len(dropped_traces) == len(scenario["traced_dropped"]) == 40
    kept_spans = [
        span
        for trace in scenario["traces"]
        for span in trace
        if span["trace_id"] in dropped_traces and span.get("metrics", {}).get("_sampling_priority_v1", 0) > 0
    ]
    assert kept_spans == []


def test_asgi_request_traced_in_both_vendors(scenario: dict[str, Any], sentry_endpoint: SentryCollector) -> None:
    request_id, status, header = scenario["traced_asgi"]
    assert (status, header) == (200, request_id)
    root, trace = django_roots(scenario)[request_id]
    assert root["metrics"]["_sampling_priority_v1"] > 0
    assert {"sql", "redis", "http"} <= {span.get("type") for span in trace if span is not root}
    transactions = [t for t in sentry_endpoint.of_type("transaction") if t["tags"].get("request_id") == request_id]
    assert len(transactions) == 1 and any(s["op"] == "db" for s in transactions[0]["spans"])


def test_incoming_datadog_trace_is_continued(scenario: dict[str, Any]) -> None:
    request_id, status, header = scenario["continued"]
    assert (status, header) == (200, request_id)
    spans = [span for trace in scenario["traces"] for span in trace if span["name"] == "django.request"]
    root = next(span for span in spans if span.get("meta", {}).get("request_id") == request_id)
    assert (root["trace_id"], root["parent_id"]) == (7172, 8283)


def test_incoming_sentry_trace_is_continued(scenario: dict[str, Any], sentry_endpoint: SentryCollector) -> None:
    request_id = scenario["continued"][0]
    (transaction,) = [t for t in sentry_endpoint.of_type("transaction") if t["tags"].get("request_id") == request_id]
    trace = transaction["contexts"]["trace"]
    assert (trace["trace_id"], trace["parent_span_id"]) == ("771a43a4192642f0b136d5159a501700", "a1b2c3d4e5f60718")


def test_log_lines_carry_datadog_ids(scenario: dict[str, Any]) -> None:
    request_id = scenario["traced"][0]
    _root, trace = django_roots(scenario)[request_id]
    line = next(r for r in scenario["log_lines"] if r["message"] == "traced view done")
    assert line["request_id"] == request_id
    trace_ids = {span["trace_id"] for span in trace}
    span_ids = {span["span_id"] for span in trace}
    # ddtrace logs 128-bit trace IDs as 32 hex digits; the agent keeps the low 64 bits.
    assert int(line["dd.trace_id"], 16) & (2**64 - 1) in trace_ids
    assert int(line["dd.span_id"]) in span_ids
    # The request lines of kept requests carry Datadog IDs; with our tracing, dropped ones carry none.
    request_lines = {r["request_id"]: r for r in scenario["log_lines"] if r["logger"] == "django_scaleops.request"}
    kept = set(scenario["sampled_expected"])
    dropped = set(scenario["sampled_sent"]) - kept
    assert kept and dropped and all("dd.trace_id" in request_lines[rid] for rid in kept)
    if scenario["mode"] == "sampled":
        assert not any("dd.trace_id" in request_lines[rid] for rid in dropped)
    logged = "\n".join(json.dumps(r) for r in scenario["log_lines"])
    assert not any(core in logged for secret in scenario["secret_values"] for core in secret_core(secret))


def test_sentry_event_tagged_with_response_request_id(
    scenario: dict[str, Any], sentry_endpoint: SentryCollector
) -> None:
    request_id, status, header = scenario["boom"]
    assert status == 500 and header == request_id
    errors = [e for e in sentry_endpoint.of_type("event") if e.get("exception")]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for error in errors:
        by_id.setdefault(error["tags"]["request_id"], []).append(error)
    assert len(by_id[header]) == 1
    assert by_id[header][0]["environment"] == "ci" and by_id[header][0]["release"] == "1.2.3"
    assert by_id[header][0]["request"]["url"].endswith("/boom/") and by_id[header][0]["transaction"] == "/boom/"
    # Without an incoming ID, WSGI and ASGI alike: the event's ID is the one the response echoed.
    for key in ("boom_wsgi_generated", "boom_asgi_generated"):
        status, generated = scenario[key]
        assert status == 500 and len(generated) == 32
        assert len(by_id[generated]) == 1, key
    assert len(errors) == 3
    # No PII by default: no client IP, no cookies.
    assert all("ip_address" not in e.get("user", {}) for e in errors)
    assert all(not e.get("request", {}).get("cookies") for e in errors)


def test_request_lines_leave_no_breadcrumb_in_other_requests_events(
    scenario: dict[str, Any], sentry_endpoint: SentryCollector
) -> None:
    # The request line is written as the request's Sentry scope ends (a streamed response's once
    # its last chunk has gone, after it): as a breadcrumb it could only reach later requests' events.
    assert list(scenario["streamed"][1:]) == [200, "streamed-before-boom"]
    request_id = scenario["boom"][0]
    (event,) = [e for e in sentry_endpoint.of_type("event") if e["tags"].get("request_id") == request_id]
    crumbs = event.get("breadcrumbs", {}).get("values", [])
    assert any("about to fail" in (crumb.get("message") or "") for crumb in crumbs), crumbs
    assert not [crumb for crumb in crumbs if crumb.get("category") == "django_scaleops.request"], crumbs


def test_request_lines_cost_sentry_logging_nothing(scenario: dict[str, Any]) -> None:
    # Ignored for breadcrumbs and events, the request line still went through the integration's
    # Sentry Logs handler (off unless enable_logs), on every request, kept or dropped.
    handled = scenario["sentry_logging_work"]
    assert "django_scaleops.request" not in handled
    assert "tests.apm" in handled  # the views' own lines still are (their breadcrumbs are tested above)


def test_no_secret_reaches_sentry_or_datadog(scenario: dict[str, Any], sentry_endpoint: SentryCollector) -> None:
    sentry_text = "\n".join(sentry_endpoint.raw)
    datadog_text = json.dumps(scenario["traces"])
    assert "[MASKED]" in sentry_text and "[MASKED]" in datadog_text
    # The helper's span reached Datadog under the request, its tags masked.
    _, trace = django_roots(scenario)[scenario["secrets"][0]]
    custom = next(span for span in trace if span["name"] == "secrets.tags")
    assert "[MASKED]" in custom["meta"]["detail"] and "[MASKED]" in custom["meta"]["more"]
    leaks = []
    for secret in scenario["secret_values"]:
        for core in secret_core(secret):
            escaped = json.dumps(core)[1:-1]
            for where, text in (("sentry", sentry_text), ("datadog", datadog_text)):
                if core in text or escaped in text:
                    leaks.append((where, core[:24]))
    assert leaks == []


def test_health_never_sampled_and_kept_sets_identical(
    scenario: dict[str, Any], sentry_endpoint: SentryCollector
) -> None:
    roots = django_roots(scenario)
    health_id = scenario["health"][0]
    if scenario["mode"] == "vendor":
        # ddtrace traces every request and marks the dropped ones.
        assert health_id in roots and roots[health_id][0]["metrics"]["_sampling_priority_v1"] <= 0
    else:
        # Ours traces only the kept requests: a dropped one sends no root span at all.
        assert health_id not in roots
        assert set(roots) & set(scenario["sampled_sent"]) == set(scenario["sampled_expected"])
    transactions = {t.get("tags", {}).get("request_id") for t in sentry_endpoint.of_type("transaction")}
    assert health_id not in transactions
    sent = set(scenario["sampled_sent"])
    expected = set(scenario["sampled_expected"])
    datadog_kept = {
        rid for rid, (root, _) in roots.items() if rid in sent and root["metrics"]["_sampling_priority_v1"] > 0
    }
    sentry_kept = transactions & sent
    assert datadog_kept == sentry_kept == expected
    assert 0.05 < len(expected) / len(sent) < 0.16


@pytest.mark.parametrize("mode", ["sampled", "vendor"])
def test_shared_decision_over_10000_simulated_requests(
    mode: str, django_db_setup: None, django_db_blocker: Any
) -> None:
    with django_db_blocker.unblock():
        report = run_worker(
            "simulate",
            {
                "SCALEOPS_TEST_TRACING": mode,
                "SCALEOPS_TEST_VENDORS": "sentry,datadog",
                "SCALEOPS_TEST_DSN": f"http://public@127.0.0.1:{free_port()}/1",
                "SCALEOPS_TEST_AGENT_URL": f"http://127.0.0.1:{free_port()}",
                "DD_TRACE_ENABLED": "true",
            },
        )
    assert report["count"] == 10_000
    assert report["sentry"] == report["datadog"]
    assert 0.09 <= len(report["sentry"]) / report["count"] <= 0.11
    assert report["health_kept"] == 0


def test_default_rates_and_exclusions() -> None:
    from django.test import override_settings

    from django_scaleops.apm import sampling

    with override_settings(DEBUG=True):
        assert sampling.sample_rate() == 1.0
    with override_settings(DEBUG=False):
        assert sampling.sample_rate() == 0.1
    with override_settings(SCALEOPS_APM_SAMPLE_RATE=0.25):
        kept = sum(sampling.should_sample(f"id-{i}", "/api/x/") for i in range(4_000))
        assert 900 <= kept <= 1_100
    assert not sampling.should_sample("any", "/health/ready")
    assert not sampling.should_sample("any", "/metrics/queries")
    # The decision is a function of the ID alone: the same ID always gets the same answer.
    assert {sampling.keep("stable-id", 0.5) for _ in range(10)} in ({True}, {False})


def test_checks_are_bound_and_metrics_published() -> None:
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError
    from django.test import override_settings

    from django_scaleops import metrics
    from django_scaleops.apm import record_metric

    with override_settings(SCALEOPS_APM_SAMPLE_RATE=2.0), pytest.raises(SystemCheckError, match=r"scaleops\.E002"):
        call_command("check")
    from django_scaleops.apm.checks import MIDDLEWARE_PATH, check_observability

    enabled = {"SCALEOPS_APM_ENABLED": ["sentry"], "SCALEOPS_APM_SENTRY_DSN": "http://k@127.0.0.1:9/1"}
    with override_settings(**enabled, MIDDLEWARE=["django.middleware.common.CommonMiddleware"]):
        assert "scaleops.W013" in {message.id for message in check_observability()}
    with override_settings(**enabled, MIDDLEWARE=[MIDDLEWARE_PATH]):
        assert "scaleops.W013" not in {message.id for message in check_observability()}
    with override_settings(**enabled, SCALEOPS_APM_REQUEST_TRACING="vendor", MIDDLEWARE=[]):
        assert "scaleops.W013" not in {message.id for message in check_observability()}
    record_metric("tests.published", 5)
    assert metrics.collect()["apm"]["tests.published"]["last"] == 5
