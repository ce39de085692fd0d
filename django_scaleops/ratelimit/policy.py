"""A rate policy (limit per period plus burst) and the rate strings of the settings."""

from __future__ import annotations

import re
from dataclasses import dataclass

FAIL_OPEN = "open"
FAIL_CLOSED = "closed"
FAIL_LOCAL = "local"
FAILURE_MODES = (FAIL_OPEN, FAIL_CLOSED, FAIL_LOCAL)

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*(?:burst\s+(\d+))?\s*$")


@dataclass(frozen=True)
class Policy:
    """What one bucket allows: ``limit`` per ``period`` seconds, plus ``burst`` on top when idle.

    Args:
        name: shown in the ``RateLimit-Policy`` header (a tier name or a path policy name).
        limit: steady number of requests per period.
        period: the period in seconds.
        burst: extra requests a key that was idle may send back to back.
        failure_mode: what happens while Redis is unreachable: ``open``, ``closed`` or ``local``.
        expose_headers: whether responses carry the rate-limit headers.
        invalid: why the tier row behind this policy is invalid (None when it is valid). An invalid
            row's values are raised to the smallest valid ones so the policy exists, and the
            limiter answers every request of it with ``failure_mode`` instead of asking Redis.
    """

    name: str
    limit: int
    period: int
    burst: int = 0
    failure_mode: str = FAIL_OPEN
    expose_headers: bool = True
    invalid: str | None = None

    @property
    def capacity(self) -> int:
        """Requests a full (idle) bucket admits back to back."""
        return self.limit + self.burst

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period < 1 or self.burst < 0:
            raise ValueError(f"invalid policy {self.name!r}: limit and period must be >= 1 and burst >= 0")
        if self.failure_mode not in FAILURE_MODES:
            raise ValueError(f"invalid failure mode {self.failure_mode!r}; expected one of {', '.join(FAILURE_MODES)}")


def parse_rate(rate: object, *, name: str, failure_mode: str = FAIL_OPEN) -> Policy:
    """Parse ``"20/m"``, ``"100/30s"`` or ``"20/m burst 5"`` into a policy.

    Raises:
        ValueError: the string is not a rate, with the accepted forms in the message.
    """
    match = _RATE.match(rate) if isinstance(rate, str) else None
    if not match:
        raise ValueError(f"{rate!r} is not a rate; expected forms like '20/m', '100/30s' or '20/m burst 5'")
    count, multiplier, unit, burst = match.groups()
    period = int(multiplier or 1) * PERIODS[unit]
    return Policy(name=name, limit=int(count), period=period, burst=int(burst or 0), failure_mode=failure_mode)
