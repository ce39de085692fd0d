"""The outcome of one rate-limit check, and what a refusal tells the client."""

from __future__ import annotations

import math
from dataclasses import dataclass

from django_scaleops.ratelimit.policy import Policy

ALLOWED, LIMITED, REVOKED = 1, 0, -1


@dataclass(frozen=True)
class Decision:
    """The outcome of one check.

    ``degraded`` names the failure mode used when Redis could not be asked (else None).
    """

    allowed: bool
    policy: Policy
    remaining: int
    retry_after: float
    reset_after: float
    revoked: bool = False
    degraded: str | None = None


def retry_seconds(decision: Decision) -> int:
    """Whole seconds for Retry-After: never 0 for a refusal."""
    return max(1, math.ceil(decision.retry_after))
