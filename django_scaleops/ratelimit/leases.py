"""Requests a process takes ahead from a large bucket, admitted without asking Redis."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from django_scaleops.conf import conf
from django_scaleops.ratelimit.decision import Decision
from django_scaleops.ratelimit.policy import Policy

# A lease never holds more than this share of a bucket, so keys whose limit + burst is under
# 1,000 are always checked request by request, and what leases hold back stays under 0.1%.
LEASE_SHARE = 1000


@dataclass
class Lease:
    """Requests this process took ahead from one bucket, admitted here without asking Redis."""

    policy: Policy
    left: int
    served: int
    expires: float  # time.monotonic()
    remaining: int  # what the bucket had left when granted, the lease not included
    reset_after: float
    record_usage: bool


class Leases:
    """The live leases of this process, by (identity, slot).

    A lease is taken from the shared bucket before anything is admitted from it, so leases never
    admit more than the bucket holds. Its unused requests go back (and the requests it admitted
    are counted in the usage) with the next Redis call for the same bucket.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], Lease] = {}
        self._max_entries = max_entries

    def take(self, identity: str, slot: str, policy: Policy, record_usage: bool) -> Decision | None:
        """Admit one request from a live lease of the bucket, or None when there is none."""
        with self._lock:
            lease = self._held.get((identity, slot))
            if (
                lease is None
                or lease.left <= 0
                or lease.policy != policy
                or lease.record_usage != record_usage
                or time.monotonic() >= lease.expires
            ):
                return None
            lease.left -= 1
            lease.served += 1
            remaining = lease.remaining + lease.left
        return Decision(
            allowed=True, policy=policy, remaining=remaining, retry_after=0.0, reset_after=lease.reset_after
        )

    def settle(self, identity: str, slot: str) -> tuple[int, int]:
        """Remove the bucket's lease; returns (requests to give back, requests it admitted)."""
        with self._lock:
            lease = self._held.pop((identity, slot), None)
        return (lease.left, lease.served) if lease is not None else (0, 0)

    def hold(self, identity: str, slot: str, lease: Lease) -> None:
        with self._lock:
            earlier = self._held.get((identity, slot))
            if earlier is not None and earlier.policy == lease.policy:
                # Another thread's lease of the same bucket: keep its requests rather than lose them.
                lease.left += earlier.left
                lease.served += earlier.served
            elif len(self._held) >= self._max_entries:
                self._held.clear()  # what the dropped leases held drains from the buckets by itself
            self._held[(identity, slot)] = lease

    def forget(self, identity: str | None = None) -> None:
        """Drop the leases of ``identity`` (revoked, reset), or all of them."""
        self.forget_many(None if identity is None else {identity})

    def forget_many(self, identities: set[str] | None) -> None:
        """Drop the leases of every identity in ``identities`` (None: all), in one pass."""
        with self._lock:
            for key in [k for k in self._held if identities is None or k[0] in identities]:
                del self._held[key]


def lease_size(policy: Policy) -> int:
    """Requests to take ahead for a bucket of ``policy``: none for limits under ``LEASE_SHARE``."""
    return max(0, min(int(conf.SCALEOPS_THROTTLE_LEASE_MAX), policy.capacity // LEASE_SHARE))
