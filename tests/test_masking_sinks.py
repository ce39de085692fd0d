"""The secrets corpus through Sentry and Datadog: what arrives at the local Sentry endpoint and at
``ddapm-test-agent``, in every placement.

One request per corpus entry, to a real WSGI server running the app with both SDKs set up by our
``SCALEOPS_APM_*`` settings (every request kept: ``SCALEOPS_APM_SAMPLE_RATE = 1.0``), in both
request-tracing modes. Each request carries the entry in its query string and a header, logs it as
a breadcrumb, puts it in a span's resource and tags (through our helper and straight through
ddtrace), runs it as SQL, raises it in an exception through that span, and logs that exception with
the entry split into ``%``-arguments and in ``extra`` and nested ``extra``. So one Sentry error event
per entry holds every Sentry placement, and one trace every Datadog one; the SDKs send them in
batches. The test finds each (entry, placement, sink) case where it arrived and checks that none of
the entry's secrets came with it.

Run as ``python -m tests.test_masking_sinks`` it is the subprocess worker (SDK set-up is
process-global).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.urls import path

from tests.test_apm import (  # noqa: F401 - fixtures: pytest finds them by name in this module
    SentryCollector,
    agent_traces,
    sentry_endpoint,
    test_agent,
    tracing_mode,
)
from tests.test_logging_corpus import (
    Entry,
    case_marker,
    corpus,
    fail,
    leak_context,
    leaked,
    percent_args,
    strings_in,
)

ROOT = Path(__file__).resolve().parent.parent
BATCH = 20  # requests between two flushes: under Sentry's transport queue (100) and ddtrace's buffer


def request_id(index: int) -> str:
    return f"mask-{index:04d}"


def one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


# ---- the worker (a subprocess): the app, its view, and the requests


def _raw_datadog_tag(name: str, value: str) -> None:
    # Straight through ddtrace, not our helper: only the trace filter stands between it and the agent.
    from ddtrace.trace import tracer

    span = tracer.current_span()
    if span is not None:
        span.set_tag(name, value)


def masking_view(request: HttpRequest, index: int) -> HttpResponse:
    """Every placement of one corpus entry. No local holds a bare secret: Sentry sends frame locals."""
    from django_scaleops.apm import custom_span

    logger = logging.getLogger("tests.masking")
    marker = case_marker(index)
    text = corpus()[index].text
    logger.info("%s breadcrumb %s", marker, text, extra={"detail": f"{marker} {text}"})
    try:
        with custom_span("masking.case", resource=f"{marker} {text}", tags={"detail": f"{marker} {text}"}):
            _raw_datadog_tag("raw.detail", f"{marker} {text}")
            with connection.cursor() as cursor:
                cursor.execute("SELECT '{}'".format(f"{marker} {text}".replace("'", "''")))
            fail(marker, text)
    except RuntimeError:
        logger.exception(
            f"{marker} {percent_args(corpus()[index])[0]}",
            *percent_args(corpus()[index])[1],
            extra={
                "detail": f"{marker} {text}",
                "context": {"request": {"body": f"{marker} {text}"}, "lines": [f"{marker} {text}"]},
            },
        )
    return HttpResponse("ok")


urlpatterns = [path("masking/<int:index>/", masking_view)]


def configure(mode: str) -> None:
    import django
    from django.conf import settings

    from django_scaleops.logging import build_logging
    from tests import settings as base

    values = {name: getattr(base, name) for name in dir(base) if name.isupper()}
    values["DATABASES"]["default"]["NAME"] = os.environ["SCALEOPS_TEST_DB_NAME"]
    logging_config = build_logging(debug=False)
    logging_config["handlers"]["console"] = {
        "class": "logging.FileHandler",
        "filename": os.environ["SCALEOPS_TEST_LOG_FILE"],
        "formatter": "json",
        "filters": ["request_id"],
    }
    values.update(
        ROOT_URLCONF="tests.test_masking_sinks",
        MIDDLEWARE=["django_scaleops.logging.middleware.CorrelationIdMiddleware", *base.MIDDLEWARE],
        DEBUG=False,
        SCALEOPS_APM_ENABLED=["sentry", "datadog"],
        SCALEOPS_APM_SENTRY_DSN=os.environ["SCALEOPS_TEST_DSN"],
        SCALEOPS_APM_DATADOG_AGENT_URL=os.environ["SCALEOPS_TEST_AGENT_URL"],
        SCALEOPS_APM_SERVICE="scaleops-masking",
        SCALEOPS_APM_ENV="ci",
        SCALEOPS_APM_REQUEST_TRACING=mode,
        SCALEOPS_APM_SAMPLE_RATE=1.0,
        LOGGING=logging_config,
    )
    settings.configure(**values)
    django.setup()


def worker(mode: str) -> dict[str, Any]:
    import sentry_sdk
    from ddtrace.trace import tracer

    from tests.test_apm_worker import flush, get, serve

    base, server = serve()
    statuses = []
    for index, entry in enumerate(corpus()):
        marker = case_marker(index)
        query = urlencode({"case": marker, "note": entry.text})
        headers = {"X-Debug-Note": f"{marker} {one_line(entry.text)}"}
        statuses.append(get(base, f"/masking/{index}/?{query}", request_id(index), headers)[0])
        if index % BATCH == BATCH - 1:
            sentry_sdk.flush(timeout=15)
            tracer.flush()
    server.shutdown()
    flush()
    return {"mode": mode, "statuses": statuses}


# ---- the test


def run_worker(mode: str, env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "tests.test_masking_sinks", mode],
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
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture(scope="module")
def arrived(
    tracing_mode: str,  # noqa: F811 - test_apm's fixtures, imported above
    sentry_endpoint: SentryCollector,  # noqa: F811
    test_agent: str,  # noqa: F811
    django_db_setup: None,
    django_db_blocker: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """Run the worker; return what reached Sentry and Datadog (and the worker's JSON log lines)."""
    log_file = tmp_path_factory.mktemp("masking-logs") / "app.log"
    started = time.monotonic()
    with django_db_blocker.unblock():
        report = run_worker(
            tracing_mode,
            {
                "SCALEOPS_TEST_DSN": f"http://public@127.0.0.1:{sentry_endpoint.server.server_port}/1",
                "SCALEOPS_TEST_AGENT_URL": test_agent,
                "SCALEOPS_TEST_LOG_FILE": str(log_file),
            },
        )
    assert report["statuses"] == [200] * len(corpus())
    # ddtrace sends from a background thread: wait until every request's trace has landed.
    wanted = {request_id(index) for index in range(len(corpus()))}
    deadline = time.monotonic() + 30
    while True:
        traces = agent_traces(test_agent)
        roots = {span.get("meta", {}).get("request_id") for trace in traces for span in trace}
        if wanted <= roots or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return {
        "mode": tracing_mode,
        "seconds": time.monotonic() - started,
        "events": sentry_endpoint.of_type("event"),
        "transactions": sentry_endpoint.of_type("transaction"),
        "traces": traces,
        "log_lines": log_file.read_text().splitlines(),
    }


def _by_request_id(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item.get("tags", {}).get("request_id", ""): item for item in items}


def _traces_by_request_id(traces: list[list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for trace in traces:
        for span in trace:
            rid = span.get("meta", {}).get("request_id")
            if rid:
                found[rid] = trace
    return found


def _frames(event: dict[str, Any]) -> list[Any]:
    values = event.get("exception", {}).get("values", [])
    return [frame.get("vars") for value in values for frame in value.get("stacktrace", {}).get("frames", [])]


def sentry_placements(entry: Entry) -> dict[str, Callable[[dict[str, Any], dict[str, Any]], Any]]:
    """Where each placement lands in the error event (and the transaction) of a request."""
    args = len(percent_args(entry)[1])
    return {
        "message": lambda event, _: {k: event["logentry"][k] for k in ("message", "formatted")},
        # The bare secrets: the marker is in the format, so arrival is the argument count.
        "%-args": lambda event, _: event["logentry"]["params"] if len(event["logentry"]["params"]) == args else None,
        "extra": lambda event, _: event["extra"]["detail"],
        "nested extra": lambda event, _: event["extra"]["context"],
        "exception": lambda event, _: [value["value"] for value in event["exception"]["values"]],
        "frame local variables": lambda event, _: _frames(event),
        "request data": lambda event, _: event["request"],
        "breadcrumbs": lambda event, _: event["breadcrumbs"]["values"],
        "transaction spans": lambda _, transaction: transaction["spans"],
    }


def datadog_placements(mode: str) -> dict[str, Callable[[list[dict[str, Any]]], Any]]:
    def custom(trace: list[dict[str, Any]]) -> dict[str, Any]:
        return next(span for span in trace if span["name"] == "masking.case")

    placements: dict[str, Callable[[list[dict[str, Any]]], Any]] = {
        "span resource": lambda trace: custom(trace)["resource"],
        "span tags (our helper)": lambda trace: custom(trace)["meta"]["detail"],
        "span tags (ddtrace API)": lambda trace: custom(trace)["meta"]["raw.detail"],
        "error tags": lambda trace: {k: v for k, v in custom(trace)["meta"].items() if k.startswith("error.")},
        "SQL span": lambda trace: [
            {"resource": span["resource"], "meta": span.get("meta", {})} for span in trace if span.get("type") == "sql"
        ],
    }
    if mode == "vendor":
        # ddtrace's Django integration tags the root span with the query string.
        placements["request span tags"] = lambda trace: [
            span.get("meta", {}) for span in trace if span["name"] == "django.request"
        ]
    return placements


def test_no_secret_reaches_sentry_or_datadog_in_any_placement(
    arrived: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    mode = arrived["mode"]
    events = _by_request_id([event for event in arrived["events"] if event.get("exception")])
    transactions = _by_request_id(arrived["transactions"])
    traces = _traces_by_request_id(arrived["traces"])
    cases = 0
    missing: list[tuple[str, str, str]] = []
    leaks: list[tuple[str, str, str, str, str]] = []
    stray: list[tuple[str, str, str, str]] = []  # outside the placements (not counted as cases)

    def check(sink: str, placement: str, index: int, entry: Entry, found: Any, needs_marker: bool = True) -> None:
        nonlocal cases
        text = "\n".join(strings_in(found))
        if found is None or (needs_marker and case_marker(index) not in text):
            missing.append((sink, placement, case_marker(index)))
            return
        cases += 1
        if leaked(text, entry):
            leaks.append((sink, placement, entry.family, entry.rule, leak_context(text, entry)))

    for index, entry in enumerate(corpus()):
        rid = request_id(index)
        event, transaction, trace = events.get(rid), transactions.get(rid), traces.get(rid)
        if event is None or transaction is None or trace is None:
            missing.append(("sentry/datadog", "request", rid))
            continue
        for placement, extract in sentry_placements(entry).items():
            try:
                found = extract(event, transaction)
            except (KeyError, IndexError, TypeError):
                found = None
            check("Sentry endpoint", placement, index, entry, found, needs_marker=placement != "%-args")
        for placement, pick in datadog_placements(mode).items():
            try:
                found = pick(trace)
            except (KeyError, StopIteration):
                found = None
            check("ddapm-test-agent", placement, index, entry, found)
        # Beyond the placements: nothing of the entry anywhere in what its request sent.
        for sink, whole in (("Sentry event", event), ("Sentry transaction", transaction), ("Datadog trace", trace)):
            text = "\n".join(strings_in(whole))
            if leaked(text, entry):
                stray.append((sink, entry.family, entry.rule, leak_context(text, entry)))
    # The worker's own JSON log lines, under both SDKs.
    for line in arrived["log_lines"]:
        record = json.loads(line)
        for index, entry in enumerate(corpus()):
            text = "\n".join(strings_in(record))
            if case_marker(index) in line and leaked(text, entry):
                stray.append(("worker JSON log", entry.family, entry.rule, leak_context(text, entry)))
    with capsys.disabled():
        print(
            f"\nSentry + Datadog ({mode!r} request tracing): leaked {len(leaks)} of {cases}"
            f" (entry, placement, sink) cases in {arrived['seconds']:.1f}s"
        )
    assert missing == [], missing[:20]
    assert cases == len(corpus()) * (len(sentry_placements(corpus()[0])) + len(datadog_placements(mode)))
    assert leaks == [], "\n".join(map(str, leaks[:30]))
    assert stray == [], "\n".join(map(str, stray[:30]))


def test_sentry_hook_masks_the_log_arguments_the_message_masked() -> None:
    """The %-arguments Sentry sends bare: masked when masking changed them in the message."""
    from django_scaleops.apm.setup import sentry_before_send

    passphrase = next(entry.secrets[0] for entry in corpus() if entry.rule == "password-kv-spaces")
    event = {
        "logentry": {
            "message": "user %s logged in with password=%s (attempt %d)",
            "params": ["bob", passphrase, 3],
            "formatted": f"user bob logged in with password={passphrase} (attempt 3)",
        },
        "extra": {"password": passphrase, "note": "fine"},
    }
    masked = sentry_before_send(event, {})
    assert masked["logentry"]["params"] == ["bob", "[MASKED]", 3]
    assert masked["logentry"]["formatted"] == "user bob logged in with password=[MASKED]"
    assert masked["extra"] == {"password": "[MASKED]", "note": "fine"}
    mapping = {"logentry": {"message": "%(who)s %(pw)s", "params": {"who": "bob", "pw": passphrase}}}
    mapping["logentry"]["formatted"] = f"bob password: {passphrase}"
    assert sentry_before_send(mapping, {})["logentry"]["params"] == {"who": "bob", "pw": "[MASKED]"}


def main() -> None:
    mode = sys.argv[1]
    configure(mode)
    print(json.dumps(worker(mode)), flush=True)


if __name__ == "__main__":
    main()
