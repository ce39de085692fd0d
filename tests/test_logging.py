"""The LOGGING helper, the formatters and filters, the checks, and running without any APM SDK."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import Error, Warning
from django.test import override_settings

from django_scaleops.apm import (
    current_span,
    custom_span,
    database_span,
    external_api_span,
    measure_performance,
    metric_figures,
    record_metric,
    track_timing,
)
from django_scaleops.apm.checks import check_observability
from django_scaleops.checks import check_settings
from django_scaleops.context import request_id_scope
from django_scaleops.logging import JsonFormatter, MaskingFilter, ReadableFormatter, RequestIdFilter, build_logging

ROOT = Path(__file__).resolve().parent.parent


def capture(config: dict[str, Any], name: str = "tests.logging.helper") -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    config["handlers"]["console"]["stream"] = stream
    logging.config.dictConfig(config)
    return logging.getLogger(name), stream


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_helper_gives_compact_json_in_production() -> None:
    logger, stream = capture(build_logging(debug=False))
    with request_id_scope("prod-1"):
        logger.info("charged %s", "card 4111 1111 1111 1111", extra={"order_id": 7, "api_key": "sk_live_x"})
    line = stream.getvalue().strip()
    assert "\n" not in line
    record = json.loads(line)
    assert record["request_id"] == "prod-1"
    assert record["logger"] == "tests.logging.helper" and record["level"] == "INFO"
    assert record["timestamp"].endswith("+00:00") and "T" in record["timestamp"]
    assert record["message"] == "charged card [MASKED]"
    assert record["api_key"] == "[MASKED]" and record["order_id"] == 7
    assert "dd.trace_id" not in record  # no ddtrace set up in this process
    logger.info("outside a request")
    assert json.loads(stream.getvalue().splitlines()[-1])["request_id"] is None


def test_helper_gives_readable_masked_lines_in_development() -> None:
    logger, stream = capture(build_logging(debug=True, loggers={"tests": {"level": "DEBUG"}}))
    with request_id_scope("dev-1"):
        logger.debug("login password=%s", "hunter2")
    line = stream.getvalue()
    assert "[dev-1]" in line and "DEBUG" in line and "password=[MASKED]" in line and "hunter2" not in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_exceptions_and_stack_info_are_masked() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.logging.exc")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("Authorization: Bearer abcdef0123456789abcdef")
        except ValueError:
            logger.exception("failed", stack_info=True)
    finally:
        logger.removeHandler(handler)
    record = json.loads(stream.getvalue())
    assert "abcdef0123456789abcdef" not in stream.getvalue()
    assert "ValueError" in record["exc_info"] and "stack_info" in record


def test_masking_filter_cleans_records_for_foreign_formatters() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(request_id)s %(message)s"))
    handler.addFilter(RequestIdFilter())
    handler.addFilter(MaskingFilter())
    logger = logging.getLogger("tests.logging.foreign")
    logger.addHandler(handler)
    try:
        logger.warning("token=%s", "abc123")
        try:
            raise KeyError("ghp_" + "a" * 36)
        except KeyError:
            logger.exception("oops")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert text.startswith("- token=[MASKED]")
    assert "ghp_" + "a" * 36 not in text and "KeyError" in text


def test_readable_formatter_outside_a_request() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "secret=%s", ("s3cr3t",), None)
    assert ReadableFormatter("%(request_id)s %(message)s").format(record) == "- secret=[MASKED]"


def test_checks_flag_bad_observability_settings() -> None:
    with override_settings(
        SCALEOPS_APM_ENABLED=["sentry", "newrelic"],
        SCALEOPS_APM_SAMPLE_RATE=1.5,
        SCALEOPS_LOG_REQUEST_LEVEL="LOUD",
        SCALEOPS_LOG_MASK_EXTRA_PATTERNS=["(unclosed"],
        SCALEOPS_LOG_REQUEST_ID_HEADERS=["X Bad Header"],
        SCALEOPS_APM_REQUEST_TRACING="everything",
        MIDDLEWARE=[
            "django.middleware.common.CommonMiddleware",
            "django_scaleops.logging.middleware.CorrelationIdMiddleware",
        ],
    ):
        messages = check_observability() + check_settings()
    ids = sorted(m.id for m in messages if m.id)
    assert ids == [
        "scaleops.E002",
        "scaleops.E003",
        "scaleops.E003",
        "scaleops.E012",
        "scaleops.E013",
        "scaleops.E014",
        "scaleops.W012",
    ]
    assert all(isinstance(m, (Error, Warning)) and m.hint for m in messages)
    with override_settings(
        SCALEOPS_APM_ENABLED=["sentry"],
        SCALEOPS_APM_SENTRY_DSN="http://k@127.0.0.1:9/1",
        MIDDLEWARE=["django_scaleops.logging.middleware.CorrelationIdMiddleware"],
    ):
        assert check_observability() == []


def test_helpers_are_free_without_vendors() -> None:
    @custom_span("work")
    def work(x: int) -> int:
        return x + 1

    @measure_performance("async.work")
    async def async_work() -> str:
        return "done"

    import asyncio

    assert work(1) == 2
    assert asyncio.run(async_work()) == "done"
    with database_span("report"), external_api_span("billing", url="https://x/?token=abc"), track_timing("t.ms"):
        current_span().set_tag("k", "v")
    record_metric("orders.created", 3, kind="count")
    figures = metric_figures()
    assert figures["orders.created"]["count"] >= 1 and figures["t.ms"]["count"] >= 1
    assert figures["async.work.ms"]["count"] >= 1
    assert current_span().datadog is None and current_span().sentry is None


SCRIPT = textwrap.dedent(
    """
    import json, os, sys

    # A None entry in sys.modules is how Python spells "not installed" for import and find_spec.
    for blocked in set(sys.argv[1].split(",")) - {""}:
        sys.modules[blocked] = None
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django
    from django.conf import settings
    from django.test.utils import override_settings
    import django_scaleops, django_scaleops.logging, django_scaleops.apm, django_scaleops.logging.middleware
    loaded_at_import = sorted(m for m in ("sentry_sdk", "ddtrace") if sys.modules.get(m) is not None)
    django.setup()
    from django_scaleops.apm import custom_span, state
    from django_scaleops.apm.setup import setup_apm
    from django_scaleops.apm.checks import check_observability
    with override_settings(
        SCALEOPS_APM_ENABLED=["sentry", "datadog"],
        SCALEOPS_APM_SENTRY_DSN="http://k@127.0.0.1:9/1",
        SCALEOPS_APM_DATADOG_AGENT_URL="http://127.0.0.1:9",
        MIDDLEWARE=["django_scaleops.logging.middleware.CorrelationIdMiddleware", *settings.MIDDLEWARE],
    ):
        started = setup_apm()
        warnings = sorted(m.id for m in check_observability())
    with custom_span("still works"):
        pass
    print(json.dumps({"loaded_at_import": loaded_at_import, "started": started, "warnings": warnings}))
    """
)


@pytest.mark.parametrize(
    ("blocked", "started", "warnings"),
    [
        ("sentry_sdk,ddtrace", [], ["scaleops.W010", "scaleops.W010"]),
        ("ddtrace", ["sentry"], ["scaleops.W010"]),
        ("sentry_sdk", ["datadog"], ["scaleops.W010"]),
        ("", ["sentry", "datadog"], []),
    ],
)
def test_app_runs_with_neither_either_or_both_sdks(blocked: str, started: list[str], warnings: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, blocked],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded_at_import"] == []  # nothing APM-related at import time
    assert report["started"] == started
    assert report["warnings"] == warnings


def test_masking_filter_never_raises_on_bad_format_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    """The filter used to call getMessage() itself: a bad %-call raised into the application."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(MaskingFilter())
    logger = logging.getLogger("tests.logging.bad_args")
    logger.addHandler(handler)
    logger.addFilter(MaskingFilter())  # on the logger too: same path
    logger.propagate = False  # pytest's own capture handler re-raises logging errors
    api_token = "sops_abcdefabcdef_" + "x" * 43
    try:
        logger.info("%s %s", 1)
        logger.warning("%s %s %s", api_token, 2)
        logger.info("after: fine")
    finally:
        logger.removeHandler(handler)
        logger.filters.clear()
        logger.propagate = True
    assert stream.getvalue() == "after: fine\n"
    report = capsys.readouterr().err
    assert report.count("--- Logging error ---") == 2  # Handler.handleError, logging's normal path
    assert api_token not in report and "Arguments: ('[MASKED]', 2)" in report


def test_readable_formatter_masks_the_message_not_the_logger_name() -> None:
    # "myapp.auth: <message>" reads like a key and its value: the whole line used to be masked.
    formatter = ReadableFormatter("%(name)s: %(message)s | %(detail)s")
    record = logging.LogRecord("myapp.auth", logging.INFO, __file__, 1, "user %s logged in", ("bob",), None)
    record.detail = "postgresql://app:s3cr3t-pw@db/app"
    assert formatter.format(record) == "myapp.auth: user bob logged in | postgresql://app:[MASKED]@db/app"


def test_readable_formatter_masks_exception_text_cached_by_another_handler() -> None:
    try:
        raise ValueError("password=correct horse battery staple")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    logging.Formatter().format(record)  # another handler first: caches the raw traceback on the record
    assert record.exc_text and "battery" in record.exc_text
    text = ReadableFormatter("%(message)s").format(record)
    assert "ValueError: password=[MASKED]" in text and "battery" not in text


def _library_path_formatter(**kwargs: Any) -> JsonFormatter:
    class LibraryPath(JsonFormatter):
        """Overrides a step: keeps python-json-logger's own format, add_fields and json.dumps."""

        def add_fields(self, *args: Any) -> None:
            super().add_fields(*args)

    formatter = LibraryPath(use_orjson=False, **kwargs)
    assert formatter._fast_plan is None
    return formatter


@pytest.mark.parametrize("use_orjson", [True, False])
def test_one_pass_format_writes_what_the_library_path_writes(use_orjson: bool) -> None:
    import datetime
    import decimal
    import uuid

    fast, library = JsonFormatter(use_orjson=use_orjson), _library_path_formatter()
    assert fast._fast_plan is not None
    record = logging.LogRecord("x.y", logging.ERROR, __file__, 1, "héllo %s password=%s", ("wörld", "hunter2"), None)
    record.exc_text = "Traceback: token=abcdef0123456789"
    record.stack_info = "Stack (most recent call last)"
    record.__dict__.update(
        payload={"a": 1.5, 2: [1, None], "api_key": "k"},
        when=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
        ident=uuid.UUID(int=7),
        amount=decimal.Decimal("1.50"),
        huge=2**70,  # beyond orjson's 64 bits: the json module writes it
        secret_token="abc",
        _private="never written",
        user_id=3,
    )
    with request_id_scope("fast-1"):
        fast_line, library_line = fast.format(record), library.format(record)
    assert json.loads(fast_line) == json.loads(library_line)
    parsed = json.loads(fast_line)
    assert parsed["message"] == "héllo wörld password=[MASKED]" and parsed["secret_token"] == "[MASKED]"
    assert parsed["payload"]["api_key"] == "[MASKED]" and "_private" not in parsed and parsed["huge"] == 2**70
    assert parsed["request_id"] == "fast-1" and "abcdef0123456789" not in fast_line


def test_orjson_lines_are_ascii_and_compact_like_the_json_module_lines() -> None:
    pytest.importorskip("orjson")
    fast, plain = JsonFormatter(), JsonFormatter(use_orjson=False)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "plain %s", ("text",), None)
    record.created = 0.0
    assert fast.format(record) == plain.format(record)
    accented = logging.LogRecord("x", logging.INFO, __file__, 1, "café", None, None)
    assert fast.format(accented).isascii() and "caf\\u00e9" in fast.format(accented)


def test_custom_options_keep_the_library_path() -> None:
    formatter = JsonFormatter(static_fields={"service": "api"})
    assert formatter._fast_plan is None
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "password=hunter2", None, None)
    parsed = json.loads(formatter.format(record))
    assert parsed["service"] == "api" and parsed["message"] == "password=[MASKED]"
