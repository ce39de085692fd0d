"""The address a request comes from, as far as the trusted proxies say."""

from __future__ import annotations

from django.http import HttpRequest

from django_scaleops.conf import conf


def client_ip(request: HttpRequest) -> str:
    """REMOTE_ADDR, or the address the n-th trusted proxy saw when PROXY_COUNT is n."""
    proxies = int(conf.SCALEOPS_THROTTLE_PROXY_COUNT)
    if proxies > 0:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= proxies:
            return str(forwarded[-proxies])
    return str(request.META.get("REMOTE_ADDR") or "unknown")
