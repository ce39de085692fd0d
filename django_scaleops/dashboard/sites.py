"""Call sites of slow statements and the latest N+1 hints, kept for the dashboard, fleet-wide.

The query monitor logs each slow statement and N+1 hint (logger ``django_scaleops.monitoring.slow``,
with the event on ``record.scaleops_event``) but keeps no call site in its figures. This handler
reads those events: a fingerprint's call site goes to the hash ``<p>:sites`` when this process has
not sent that site yet (one write per site and process, not per slow query), and N+1 hints to the
list ``<p>:n1`` (trimmed to ``MAX_HINTS``). Both are bounded: the hash by the fingerprints the
monitor tracks, and it expires with the history.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django_scaleops.conf import conf

MAX_HINTS = 20
MAX_SITES = 2000  # per process, remembered to skip the write
RETENTION_SECONDS = 2 * 24 * 3600


class CallSiteRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self._sent: set[tuple[str, str]] = set()

    def emit(self, record: logging.LogRecord) -> None:
        event: Any = getattr(record, "scaleops_event", None)
        if not isinstance(event, dict) or not conf.SCALEOPS_DASHBOARD_CACHE_ALIAS:
            return
        kind, site, fingerprint = event.get("event"), event.get("call_site"), event.get("fingerprint")
        if not site or not fingerprint:
            return
        try:
            from django_scaleops.dashboard.sampler import history_client

            client = history_client()
            prefix = conf.SCALEOPS_DASHBOARD_REDIS_PREFIX
            if (fingerprint, site) not in self._sent:
                if len(self._sent) >= MAX_SITES:
                    self._sent.clear()
                self._sent.add((fingerprint, site))
                client.hset(f"{prefix}:sites", fingerprint, site)
                client.expire(f"{prefix}:sites", RETENTION_SECONDS)
            if kind == "n_plus_one":
                hint = {k: event.get(k) for k in ("fingerprint", "statement", "count", "alias", "call_site")}
                pipe = client.pipeline(transaction=False)
                pipe.lpush(f"{prefix}:n1", json.dumps(hint, default=str))
                pipe.ltrim(f"{prefix}:n1", 0, MAX_HINTS - 1)
                pipe.expire(f"{prefix}:n1", RETENTION_SECONDS)
                pipe.execute()
        except Exception:  # the dashboard's bookkeeping must never fail a query
            return


recorder = CallSiteRecorder()


def install() -> None:
    logger = logging.getLogger("django_scaleops.monitoring.slow")
    if recorder not in logger.handlers:
        logger.addHandler(recorder)


def read(client: Any, prefix: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """(call site by fingerprint, latest N+1 hints first)."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(f"{prefix}:sites")
    pipe.lrange(f"{prefix}:n1", 0, MAX_HINTS - 1)
    sites, hints = pipe.execute()
    decoded = {_text(k): _text(v) for k, v in sites.items()}
    return decoded, [json.loads(_text(h)) for h in hints]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
