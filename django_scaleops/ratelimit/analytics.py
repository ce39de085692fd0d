"""Per-key, per-minute usage: counted inside the limiter's Lua call, rolled up into ApiKeyUsage."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.db.models import F

from django_scaleops.ratelimit.gcra import key_identity, redis_connection, usage_key


@dataclass(frozen=True)
class UsagePoint:
    minute: datetime
    allowed: int
    limited: int


def _minute(epoch_minute: int) -> datetime:
    return datetime.fromtimestamp(epoch_minute * 60, tz=UTC)


def _parse(raw: dict[bytes, bytes]) -> dict[int, list[int]]:
    """``{b"29000000:a": b"3"}`` -> ``{29000000: [allowed, limited]}``."""
    minutes: dict[int, list[int]] = {}
    for field, count in raw.items():
        minute, _, kind = field.decode().partition(":")
        slot = minutes.setdefault(int(minute), [0, 0])
        slot[0 if kind == "a" else 1] += int(count)
    return minutes


def live_usage(api_key_id: int) -> dict[int, list[int]]:
    """Counts still in Redis (not rolled up yet), by epoch minute."""
    raw: dict[bytes, bytes] = redis_connection().hgetall(usage_key(key_identity(api_key_id)))
    return _parse(raw)


@dataclass(frozen=True)
class RollupResult:
    keys: int
    minutes: int
    requests: int


def rollup_usage(*, dry_run: bool = False, now: datetime | None = None) -> RollupResult:
    """Move completed minutes from Redis into ApiKeyUsage and set ``last_used_at``.

    The current minute stays in Redis (it is still counting). Rows are added to, not replaced,
    so running the rollup twice never loses counts.
    """
    from django_scaleops.models import ApiKey, ApiKeyUsage

    current = int((now or datetime.now(tz=UTC)).timestamp() // 60)
    client = redis_connection()
    key_ids = list(ApiKey.objects.values_list("pk", flat=True))
    pipe = client.pipeline(transaction=False)
    for key_id in key_ids:
        pipe.hgetall(usage_key(key_identity(key_id)))
    totals = RollupResult(0, 0, 0)
    for key_id, raw in zip(key_ids, pipe.execute(), strict=True):
        done = {m: c for m, c in _parse(raw).items() if m < current}
        if not done:
            continue
        totals = RollupResult(
            totals.keys + 1, totals.minutes + len(done), totals.requests + sum(a + b for a, b in done.values())
        )
        if dry_run:
            continue
        with transaction.atomic():
            for minute, (allowed, limited) in done.items():
                row, created = ApiKeyUsage.objects.get_or_create(
                    api_key_id=key_id, minute=_minute(minute), defaults={"allowed": allowed, "limited": limited}
                )
                if not created:
                    ApiKeyUsage.objects.filter(pk=row.pk).update(
                        allowed=F("allowed") + allowed, limited=F("limited") + limited
                    )
            used = [m for m, (allowed, _) in done.items() if allowed]
            if used:
                ApiKey.objects.filter(pk=key_id).update(last_used_at=_minute(max(used)) + timedelta(seconds=59))
            fields = [f"{m}:{kind}" for m in done for kind in ("a", "l")]
            client.hdel(usage_key(key_identity(key_id)), *fields)
    return totals


def get_analytics(api_key: object, since: datetime, until: datetime) -> list[UsagePoint]:
    """Allowed and limited counts per minute for ``api_key`` (an ApiKey or its id), since <= minute < until.

    Merges rolled-up rows with the counts still in Redis, so the last minutes are included.
    """
    from django_scaleops.models import ApiKeyUsage

    key_id = int(getattr(api_key, "pk", api_key))  # type: ignore[call-overload]
    points: dict[datetime, list[int]] = {}
    rows = ApiKeyUsage.objects.filter(api_key_id=key_id, minute__gte=since, minute__lt=until)
    for row in rows:
        points[row.minute] = [row.allowed, row.limited]
    try:
        live = live_usage(key_id)
    except Exception:  # Redis down: the rolled-up history is still worth showing
        live = {}
    for minute, (allowed, limited) in live.items():
        at = _minute(minute)
        if since <= at < until:
            slot = points.setdefault(at, [0, 0])
            slot[0] += allowed
            slot[1] += limited
    return [UsagePoint(minute, a, b) for minute, (a, b) in sorted(points.items())]
