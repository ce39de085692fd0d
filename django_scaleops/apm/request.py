"""What the correlation middleware tells the vendors about a request: its ID and the shared decision."""

from __future__ import annotations

from django_scaleops.apm import sampling, state


def annotate_request(request_id: str, path: str) -> None:
    """Tag the request's Sentry scope and Datadog root span with the ID; apply the shared decision.

    Called only when a vendor is active.
    """
    keep = sampling.should_sample(request_id, path)
    if state.sentry_active:
        import sentry_sdk

        # The isolation scope lives as long as the request: tags set here reach its events.
        sentry_sdk.get_isolation_scope().set_tag("request_id", request_id)
    if state.datadog_active:
        from ddtrace.constants import MANUAL_DROP_KEY, MANUAL_KEEP_KEY
        from ddtrace.trace import tracer

        root = tracer.current_root_span()
        if root is not None:
            root.set_tag("request_id", request_id)
            root.set_tag(MANUAL_KEEP_KEY if keep else MANUAL_DROP_KEY)
