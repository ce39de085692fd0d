"""Rate-limit headers (IETF draft RateLimit / RateLimit-Policy, optional X-RateLimit-*) and problem bodies."""

from __future__ import annotations

import functools
import json
import math
import time

from django.http import HttpResponse

from django_scaleops.conf import conf
from django_scaleops.ratelimit.decision import Decision, retry_seconds
from django_scaleops.ratelimit.policy import Policy

PROBLEM_TYPE = "application/problem+json"


def sf_string(text: str) -> str:
    """An RFC 9651 String: printable ASCII, with backslash and quote escaped."""
    safe = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return '"' + safe.replace("\\", "\\\\").replace('"', '\\"') + '"'


@functools.lru_cache(maxsize=256)
def policy_header(policy: Policy) -> str:
    return f"{sf_string(policy.name)};q={policy.limit};w={policy.period};burst={policy.burst}"


def add_headers(response: HttpResponse, decision: Decision) -> None:
    policy = decision.policy
    if not policy.expose_headers:
        return
    name = sf_string(policy.name)
    reset = max(0, math.ceil(decision.reset_after))
    response["RateLimit-Policy"] = policy_header(policy)
    response["RateLimit"] = f"{name};r={decision.remaining};t={reset}"
    if conf.SCALEOPS_THROTTLE_GITHUB_HEADERS:
        # The bucket's capacity: Remaining counts the burst, so it must never exceed Limit.
        response["X-RateLimit-Limit"] = str(policy.limit + policy.burst)
        response["X-RateLimit-Remaining"] = str(decision.remaining)
        response["X-RateLimit-Reset"] = str(math.ceil(time.time() + decision.reset_after))


def problem(status: int, title: str, detail: str, **extra: object) -> HttpResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return HttpResponse(json.dumps(body), status=status, content_type=PROBLEM_TYPE)


def too_many_requests(decision: Decision) -> HttpResponse:
    retry = retry_seconds(decision)
    response = problem(
        429,
        "Too Many Requests",
        f"Rate limit of policy {decision.policy.name!r} exceeded; retry in {retry} s.",
        retry_after=retry,
    )
    response["Retry-After"] = str(retry)
    add_headers(response, decision)
    return response


def unavailable(decision: Decision) -> HttpResponse:
    retry = retry_seconds(decision)
    if decision.policy.invalid is not None:
        detail = "This API key's tier is misconfigured and fails closed; retry later."
    else:
        detail = "The rate limiter cannot reach its store and this tier fails closed; retry shortly."
    response = problem(503, "Service Unavailable", detail, retry_after=retry)
    response["Retry-After"] = str(retry)
    return response


def too_many_failures(retry: int) -> HttpResponse:
    """429 for an address over ``SCALEOPS_THROTTLE_AUTH_FAILURE_RATE``: its key was not looked up."""
    response = problem(
        429,
        "Too Many Requests",
        f"Too many failed API-key authentications from this address; retry in {retry} s.",
        retry_after=retry,
    )
    response["Retry-After"] = str(retry)
    return response


def lookup_unavailable() -> HttpResponse:
    response = problem(503, "Service Unavailable", "The API key cannot be verified right now; retry shortly.")
    response["Retry-After"] = "1"
    return response


def unauthorized(detail: str) -> HttpResponse:
    response = problem(401, "Unauthorized", detail)
    response["WWW-Authenticate"] = conf.SCALEOPS_THROTTLE_AUTH_SCHEME
    return response


def refusal(decision: Decision) -> HttpResponse | None:
    """The response that refuses this decision, or None when it is allowed."""
    if decision.revoked:
        return unauthorized("The API key has been revoked.")
    if decision.allowed:
        return None
    if decision.degraded == "closed":
        return unavailable(decision)
    return too_many_requests(decision)
