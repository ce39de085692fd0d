"""Sentry and Datadog set up from ``SCALEOPS_APM_*`` settings, in one place, both optional.

``setup_apm()`` runs from ``AppConfig.ready()`` only when ``SCALEOPS_APM_ENABLED`` names a vendor;
otherwise nothing here is imported and neither SDK is touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from django.conf import settings

from django_scaleops.apm import sampling, state
from django_scaleops.conf import conf
from django_scaleops.context import REQUEST_LOGGER, request_id_var
from django_scaleops.logging.masking import MASK, Masker, get_masker

logger = logging.getLogger("django_scaleops.apm")

VENDORS = ("sentry", "datadog")


def service_name() -> str:
    if conf.SCALEOPS_APM_SERVICE:
        return conf.SCALEOPS_APM_SERVICE
    module = os.environ.get("DJANGO_SETTINGS_MODULE", "django")
    return module.split(".", 1)[0].replace("_", "-")


def environment() -> str:
    return conf.SCALEOPS_APM_ENV or ("development" if settings.DEBUG else "production")


def vendor_tracing() -> bool:
    """Whether the vendors' own Django (and psycopg) integrations trace requests, instead of ours."""
    return conf.SCALEOPS_APM_REQUEST_TRACING == "vendor"


def setup_apm() -> list[str]:
    """Start each enabled vendor whose SDK is installed. Returns the vendors started."""
    started = []
    enabled = set(conf.SCALEOPS_APM_ENABLED)
    ours = not vendor_tracing()
    if ours:
        from django_scaleops.apm import bypass

        unpatched = bypass.capture()  # before either SDK patches the Redis client
    if "sentry" in enabled and not state.sentry_active and _setup_sentry():
        started.append("sentry")
    if "datadog" in enabled and not state.datadog_active and _setup_datadog():
        started.append("datadog")
    if started and ours:
        # Dropped requests call Redis past both SDKs' instrumentation (apm/bypass.py).
        bypass.install(unpatched)
    if started and ours and not state.request_tracing:
        from django_scaleops.apm.tracing import setup_request_tracing

        setup_request_tracing()
        state.request_tracing = True
        from django_scaleops import wrappers

        wrappers.install_everywhere()  # the SQL span wrapper, on connections opened already
    return started


# ---- Sentry


def _deep_masker() -> Masker:
    # Sentry events nest deeply (exception > values > stacktrace > frames > vars).
    return get_masker(max_depth=24)


def sentry_before_send(event: Any, hint: Any) -> Any:
    """Mask every key and value of an event (request, extra, breadcrumbs, frame variables).

    Breadcrumbs are masked here, when an event carries them out, not one by one as they are
    recorded (no ``before_breadcrumb``): a request records several (SQL, Redis, log lines) and
    almost none of them is ever sent, so masking each cost about 0.1 ms a breadcrumb for nothing.
    """
    masker = _deep_masker()
    masked: dict[str, Any] = masker.mask(event)
    _mask_log_params(event, masked)
    return masked


def _mask_log_params(event: Any, masked: dict[str, Any]) -> None:
    """Mask the ``%``-arguments of a log event by what masking did to its formatted message.

    ``logger.error("login password=%s", password)`` sends the bare password as ``logentry.params``,
    with nothing around it to show it is one. Every argument that no longer shows whole in the
    masked message was (part of) a secret there: it is masked whole.
    """
    entry, masked_entry = event.get("logentry"), masked.get("logentry")
    if not isinstance(entry, dict) or not isinstance(masked_entry, dict):
        return
    params, formatted = entry.get("params"), masked_entry.get("formatted")
    if not params or not isinstance(formatted, str) or formatted == entry.get("formatted"):
        return

    def check(value: Any, masked_value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float)):
            return masked_value
        return masked_value if str(value) in formatted else MASK

    if isinstance(params, dict):
        masked_entry["params"] = {key: check(value, masked_entry["params"].get(key)) for key, value in params.items()}
    elif isinstance(params, (list, tuple)):
        masked_entry["params"] = [
            check(value, masked_value) for value, masked_value in zip(params, masked_entry["params"], strict=False)
        ]


def sentry_traces_sampler(sampling_context: dict[str, Any]) -> float:
    """Sentry's half of the shared decision: 1.0 or 0.0, from the request ID and path."""
    environ = sampling_context.get("wsgi_environ")
    if environ is not None:
        request_id = sampling.request_id_from_meta(environ)
        environ[sampling.ENVIRON_KEY] = request_id
        return 1.0 if sampling.should_sample(request_id, environ.get("PATH_INFO", "")) else 0.0
    scope = sampling_context.get("asgi_scope")
    if scope is not None and scope.get("type") == "http":
        request_id = sampling.request_id_from_scope(scope)
        scope[sampling.ENVIRON_KEY] = request_id
        return 1.0 if sampling.should_sample(request_id, scope.get("path", "")) else 0.0
    # Not a request (task, command): follow the parent, else decide on the current request ID.
    parent = sampling_context.get("parent_sampled")
    if parent is not None:
        return 1.0 if parent else 0.0
    current = request_id_var.get()
    return 1.0 if current and sampling.should_sample(current) else 0.0


def _setup_sentry() -> bool:
    if not conf.SCALEOPS_APM_SENTRY_DSN:
        logger.warning("Sentry is enabled but SCALEOPS_APM_SENTRY_DSN is empty; Sentry stays off.")
        return False
    try:
        import sentry_sdk
        from sentry_sdk.integrations.django import DjangoIntegration
        from sentry_sdk.integrations.logging import LoggingIntegration, ignore_logger
        from sentry_sdk.integrations.redis import RedisIntegration
    except ImportError:
        logger.warning("Sentry is enabled but sentry-sdk is not installed: pip install 'django-scaleops[sentry]'.")
        return False
    integrations: list[Any] = [RedisIntegration(), LoggingIntegration(level=logging.INFO, event_level=logging.ERROR)]
    vendor = vendor_tracing()
    if vendor:
        spans = conf.SCALEOPS_APM_MIDDLEWARE_SPANS
        integrations.append(DjangoIntegration(middleware_spans=spans, signals_spans=spans))
    sentry_sdk.init(
        dsn=conf.SCALEOPS_APM_SENTRY_DSN,
        environment=environment(),
        release=conf.SCALEOPS_APM_VERSION or None,
        server_name=service_name(),
        integrations=integrations,
        # Otherwise our middleware traces the kept requests and reports errors (apm/tracing.py).
        disabled_integrations=[] if vendor else [DjangoIntegration],
        traces_sampler=sentry_traces_sampler,
        before_send=sentry_before_send,
        before_send_transaction=sentry_before_send,
        send_default_pii=conf.SCALEOPS_APM_SEND_PII,
        include_local_variables=True,
    )
    sentry_sdk.set_tag("service", service_name())
    # The request line is written as the request's scope ends, or for a streamed response after
    # it: as a breadcrumb it reached only later requests' events (and cost every request the
    # integration's work), and an access line is no error event either. Nor a Sentry log: without
    # this, every request line still went through the Sentry Logs handler, on or off (about 4 µs a
    # line; ignore_logger_for_sentry_logs is newer than sentry-sdk 2.0).
    ignore_logger(REQUEST_LOGGER)
    with contextlib.suppress(ImportError):
        from sentry_sdk.integrations.logging import ignore_logger_for_sentry_logs

        ignore_logger_for_sentry_logs(REQUEST_LOGGER)
    state.sentry_active = True
    return True


# ---- Datadog


def _datadog_trace_filter() -> Any:
    from ddtrace.trace import TraceFilter

    class MaskingTraceFilter(TraceFilter):
        """Mask secrets in span tags and SQL/Redis resources before a trace leaves the process."""

        def process_trace(self, trace: list[Any]) -> list[Any] | None:
            masker = get_masker()
            for span in trace:
                for key, value in span.get_tags().items():
                    # Every tag: SQL text, Redis arguments, URLs, error messages and stacks.
                    masked = "[MASKED]" if masker.is_sensitive_key(key) else masker.mask_text(value)
                    if masked != value:
                        span.set_tag(key, masked)
                if span.resource:
                    span.resource = masker.mask_text(span.resource)
            return trace

    return MaskingTraceFilter()


def _setup_datadog() -> bool:
    # ddtrace reads its configuration from the environment when first imported.
    if conf.SCALEOPS_APM_DATADOG_AGENT_URL:
        os.environ.setdefault("DD_TRACE_AGENT_URL", conf.SCALEOPS_APM_DATADOG_AGENT_URL)
    os.environ.setdefault("DD_SERVICE", service_name())
    os.environ.setdefault("DD_ENV", environment())
    if conf.SCALEOPS_APM_VERSION:
        os.environ.setdefault("DD_VERSION", conf.SCALEOPS_APM_VERSION)
    os.environ.setdefault("DD_DJANGO_INSTRUMENT_MIDDLEWARE", str(conf.SCALEOPS_APM_MIDDLEWARE_SPANS).lower())
    # Traces outside requests (commands, tasks) use the same rate; requests get our decision.
    os.environ.setdefault("DD_TRACE_SAMPLING_RULES", f'[{{"sample_rate": {sampling.sample_rate()}}}]')
    try:
        import ddtrace
        from ddtrace.trace import tracer
    except ImportError:
        logger.warning("Datadog is enabled but ddtrace is not installed: pip install 'django-scaleops[datadog]'.")
        return False
    from ddtrace import config as dd_config

    # With our request tracing, Django and psycopg are left unpatched: the middleware makes the
    # root span and SQL spans for kept requests only (apm/tracing.py).
    vendor = vendor_tracing()
    ddtrace.patch(django=vendor, psycopg=vendor, redis=True, requests=True, httplib=True, urllib3=True)
    # No PII unless asked: user names off; query strings kept for debugging but masked below.
    dd_config.django["include_user_name"] = conf.SCALEOPS_APM_SEND_PII
    dd_config.django["trace_query_string"] = True
    tracer.configure(trace_processors=[_datadog_trace_filter()])
    state.datadog_active = True
    return True


def on_ready() -> None:
    """Run by ``AppConfig.ready()``: register our checks and metrics; start the SDKs only if configured."""
    from django.core.checks import register

    from django_scaleops import metrics
    from django_scaleops.apm.checks import check_observability
    from django_scaleops.apm.helpers import metric_figures
    from django_scaleops.apm.prometheus import prometheus_families

    register(check_observability)
    metrics.register_source("apm", metric_figures, families=prometheus_families)
    from django_scaleops import wrappers
    from django_scaleops.apm.tracing import traced_execute

    # The SQL span wrapper, on every connection once our request tracing runs.
    wrappers.provide("apm", lambda connection: traced_execute if state.request_tracing else None, traced_execute)
    if conf.SCALEOPS_APM_ENABLED:
        setup_apm()
