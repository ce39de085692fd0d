"""Request tracing that instruments only the kept requests (``SCALEOPS_APM_REQUEST_TRACING = "sampled"``).

The vendors' own Django and psycopg integrations build spans, scopes and transactions for every
request, then drop nine in ten at the production rate: on the example API that was most of the APM
cost. Here the correlation middleware makes the shared decision first. A kept request gets a
Datadog ``django.request`` root span, a Sentry transaction and a span per SQL statement; a dropped
one gets none of that. Every request, kept or not, gets its own Sentry scope tagged with its ID, so
errors are still reported at 100%.
"""

from __future__ import annotations

import functools
import random
import sys
from contextlib import AbstractContextManager
from contextvars import ContextVar, Token
from types import SimpleNamespace, TracebackType
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from django_scaleops.apm import sampling, state
from django_scaleops.conf import conf

# The request being traced in this context, or None (no request, or a dropped one).
_current: ContextVar[RequestTrace | None] = ContextVar("scaleops_request_trace", default=None)
# True while a dropped request runs: the helpers then skip the vendors.
_dropped: ContextVar[bool] = ContextVar("scaleops_request_dropped", default=False)

_UNSET: Any = object()
_SENTRY_HEADERS = (("sentry-trace", "HTTP_SENTRY_TRACE"), ("baggage", "HTTP_BAGGAGE"))


@functools.cache
def _ddtrace() -> SimpleNamespace:
    """The ddtrace names every request uses, imported once: ddtrace loads only once set up, and a
    ``from`` import of a package in the request path went through importlib's Python code each time."""
    from ddtrace.constants import MANUAL_KEEP_KEY, USER_REJECT
    from ddtrace.propagation.http import HTTPPropagator
    from ddtrace.trace import Context, tracer

    return SimpleNamespace(
        MANUAL_KEEP_KEY=MANUAL_KEEP_KEY,
        USER_REJECT=USER_REJECT,
        HTTPPropagator=HTTPPropagator,
        Context=Context,
        tracer=tracer,
    )


def current_trace() -> RequestTrace | None:
    """The kept request running in this context, if any."""
    return _current.get()


def in_dropped_request() -> bool:
    """Whether this context runs a request the shared decision dropped (nothing of it is traced)."""
    return _dropped.get()


class RequestTrace:
    """One request's tracing: its own Sentry scope always; root spans only when it is kept.

    Used by the correlation middleware as ``with RequestTrace(request, request_id) as trace:``,
    setting ``trace.response`` before the block ends.
    """

    def __init__(self, request: HttpRequest, request_id: str) -> None:
        self.request = request
        self.request_id = request_id
        self.keep = sampling.should_sample(request_id, request.path)
        self.response: HttpResponseBase | None = None
        self.dd_span: Any = None
        self.sentry_transaction: Any = None
        self._sentry_scope: AbstractContextManager[Any] | None = None
        self._dd_previous: Any = _UNSET
        self._tokens: tuple[Token[RequestTrace | None], Token[bool]] | None = None

    def __enter__(self) -> RequestTrace:
        if state.sentry_active:
            self._enter_sentry()
        if state.datadog_active:
            self._enter_datadog()
        self._tokens = (_current.set(self if self.keep else None), _dropped.set(not self.keep))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._tokens is not None:
            _current.reset(self._tokens[0])
            _dropped.reset(self._tokens[1])
        if state.datadog_active:
            self._exit_datadog(exc_type, exc, tb)
        if state.sentry_active:
            self._exit_sentry(exc_type, exc, tb)

    def url(self) -> str:
        """Scheme, host and path: no query string (its secrets stay out of span tags)."""
        return f"{self.request.scheme}://{self.request.META.get('HTTP_HOST', '')}{self.request.path}"

    def route(self) -> str:
        """The URL pattern that served the request (``api/conversations/<int:pk>/``), else its path."""
        match = getattr(self.request, "resolver_match", None)
        route = getattr(match, "route", None)
        return f"/{route.lstrip('^')}" if route else self.request.path

    # ---- Sentry

    def _enter_sentry(self) -> None:
        import sentry_sdk

        # A fresh isolation scope per request, as Sentry's Django integration gives: tags,
        # breadcrumbs and the request's data stay with this request's events only.
        self._sentry_scope = sentry_sdk.isolation_scope()
        scope = self._sentry_scope.__enter__()
        scope.set_tag("request_id", self.request_id)
        scope.add_event_processor(_sentry_request_processor(self))
        if not self.keep:
            return
        meta = self.request.META
        incoming = {name: meta[key] for name, key in _SENTRY_HEADERS if key in meta}
        transaction = sentry_sdk.continue_trace(
            incoming, op="http.server", name=self.request.path, source="url", origin="auto.http.django_scaleops"
        )
        transaction.sampled = True  # the shared decision, not Sentry's sampler
        transaction.set_tag("request_id", self.request_id)
        self.sentry_transaction = sentry_sdk.start_transaction(transaction)
        self.sentry_transaction.__enter__()

    def _exit_sentry(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        transaction, self.sentry_transaction = self.sentry_transaction, None
        if transaction is not None:
            transaction.name = self.route()
            transaction.source = "route"
            if self.response is not None:
                transaction.set_http_status(self.response.status_code)
            transaction.__exit__(exc_type, exc, tb)
        scope, self._sentry_scope = self._sentry_scope, None
        if scope is not None:
            scope.__exit__(exc_type, exc, tb)

    # ---- Datadog

    def _enter_datadog(self) -> None:
        dd = _ddtrace()
        provider = dd.tracer.context_provider
        self._dd_previous = provider.active()
        if not self.keep:
            # A rejected trace context for the request: what ddtrace's Redis and HTTP client
            # integrations trace inside it is dropped with it, not kept by the sampling rule,
            # and an outgoing call tells the services downstream to drop it too.
            ids = random.getrandbits(64) or 1, random.getrandbits(64) or 1
            provider.activate(dd.Context(trace_id=ids[0], span_id=ids[1], sampling_priority=dd.USER_REJECT))
            return
        incoming = dd.HTTPPropagator.extract(self.request.headers)
        if incoming.trace_id:
            provider.activate(incoming)
        span = dd.tracer.trace("django.request", resource=f"{self.request.method} {self.request.path}", span_type="web")
        span.set_tag(dd.MANUAL_KEEP_KEY)
        span.set_tag("component", "django")
        span.set_tag("span.kind", "server")
        span.set_tag("request_id", self.request_id)
        span.set_tag("http.method", self.request.method or "")
        span.set_tag("http.url", self.url())  # the trace filter masks what the path may carry
        self.dd_span = span

    def _exit_datadog(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        span, self.dd_span = self.dd_span, None
        if span is not None:
            route = self.route()
            span.resource = f"{self.request.method} {route}"
            span.set_tag("http.route", route)
            if self.response is not None:
                status = self.response.status_code
                span.set_tag("http.status_code", str(status))
                if status >= 500:
                    span.error = 1
            if exc is not None:
                span.set_exc_info(exc_type, exc, tb)
            span.finish()
        if self._dd_previous is not _UNSET:
            _ddtrace().tracer.context_provider.activate(self._dd_previous)
            self._dd_previous = _UNSET


def _sentry_request_processor(trace: RequestTrace) -> Any:
    """Fill an event's request data, built only when an event is sent (before_send masks it)."""

    def process(event: dict[str, Any], hint: Any) -> dict[str, Any]:
        request = trace.request
        meta = request.META
        info = event.setdefault("request", {})
        info.setdefault("method", request.method)
        info.setdefault("url", trace.url())
        info.setdefault("query_string", meta.get("QUERY_STRING", ""))
        headers = {key[5:].replace("_", "-").title(): value for key, value in meta.items() if key.startswith("HTTP_")}
        if not conf.SCALEOPS_APM_SEND_PII:
            headers = {k: v for k, v in headers.items() if k not in ("Cookie", "Authorization", "X-Forwarded-For")}
        info.setdefault("headers", headers)
        if event.get("transaction") is None or event.get("transaction_info", {}).get("source") != "route":
            event["transaction"] = trace.route()
        return event

    return process


# ---- SQL spans (put on connections by django_scaleops.wrappers) and errors (setup_request_tracing)


def traced_execute(execute: Any, sql: Any, params: Any, many: bool, context: dict[str, Any]) -> Any:
    """A Django execute wrapper: a span per statement, only inside a kept request."""
    trace = _current.get()
    if trace is None:
        return execute(sql, params, many, context)
    connection: BaseDatabaseWrapper = context["connection"]
    statement = str(sql)
    with _sql_spans(statement, connection):
        return execute(sql, params, many, context)


class _sql_spans:
    def __init__(self, statement: str, connection: BaseDatabaseWrapper) -> None:
        self.statement, self.connection = statement, connection
        self.spans: list[Any] = []

    def __enter__(self) -> None:
        db_system = self.connection.vendor
        if state.datadog_active:
            from ddtrace.trace import tracer

            span = tracer.trace(f"{db_system}.query", resource=self.statement, span_type="sql")
            span.set_tag("component", "django_scaleops")
            span.set_tag("span.kind", "client")
            span.set_tag("db.system", db_system)
            span.set_tag("db.name", str(self.connection.settings_dict.get("NAME") or ""))
            span.set_tag("django.db.alias", self.connection.alias)
            self.spans.append(span)
        if state.sentry_active:
            import sentry_sdk

            sentry_span = sentry_sdk.start_span(op="db", name=self.statement, origin="auto.db.django_scaleops")
            sentry_span.set_data("db.system", db_system)
            sentry_span.__enter__()
            self.spans.append(sentry_span)

    def __exit__(self, *exc: Any) -> None:
        for span in reversed(self.spans):
            span.__exit__(*exc)


def _report_request_exception(sender: Any, request: Any = None, **kwargs: Any) -> None:
    """``got_request_exception``: Sentry gets the error at 100%; a kept request's span is marked."""
    exc_info = sys.exc_info()
    if exc_info[0] is None:
        return
    if state.sentry_active:
        import sentry_sdk
        from sentry_sdk.utils import event_from_exception

        client = sentry_sdk.get_client()
        event, hint = event_from_exception(
            exc_info, client_options=client.options, mechanism={"type": "django", "handled": False}
        )
        sentry_sdk.capture_event(event, hint=hint)
    trace = _current.get()
    if trace is not None and trace.dd_span is not None:
        trace.dd_span.set_exc_info(*exc_info)


def setup_request_tracing() -> None:
    """Connect the error reporter, once. The SQL span wrapper (``traced_execute``) is put on each
    connection by ``django_scaleops.wrappers`` once ``state.request_tracing`` is set."""
    from django.core.signals import got_request_exception

    got_request_exception.connect(_report_request_exception, dispatch_uid="scaleops.apm.request_exception")
