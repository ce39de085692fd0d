"""Models of django-scaleops: rate-limit tiers, API keys and their rolled-up usage."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, router
from django.utils import timezone

from django_scaleops.ratelimit.keys import generate_key, mask
from django_scaleops.ratelimit.policy import FAIL_CLOSED, FAIL_LOCAL, FAIL_OPEN, FAILURE_MODES, Policy
from django_scaleops.signals import api_keys_changed


class Tier(models.Model):
    """A product tier: how many requests per period its keys may send, and what happens when Redis fails."""

    FAILURE_CHOICES = [
        (FAIL_OPEN, "open: allow every request while Redis is down"),
        (FAIL_CLOSED, "closed: refuse with 503 while Redis is down"),
        (FAIL_LOCAL, "local: an in-process limiter at limit / instances"),
    ]

    name = models.CharField(max_length=50, unique=True)
    requests_per_period = models.PositiveIntegerField(help_text="Steady number of requests allowed per period.")
    period_seconds = models.PositiveIntegerField(default=60, help_text="Length of the period, in seconds.")
    burst = models.PositiveIntegerField(
        default=0, help_text="Extra requests an idle key may send back to back on top of the limit."
    )
    failure_mode = models.CharField(max_length=10, choices=FAILURE_CHOICES, default=FAIL_OPEN)
    expose_headers = models.BooleanField(default=True, help_text="Send RateLimit headers on responses.")

    class Meta:
        app_label = "scaleops"
        ordering = ["requests_per_period", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.requests_per_period}/{self.period_seconds}s, burst {self.burst})"

    def clean(self) -> None:
        if self.requests_per_period < 1:
            raise ValidationError({"requests_per_period": "A tier must allow at least one request per period."})
        if self.period_seconds < 1:
            raise ValidationError({"period_seconds": "The period must be at least one second."})

    def problem(self) -> str | None:
        """Why this row cannot be enforced (values written around the admin), or None when it is valid."""
        problems = []
        if self.requests_per_period < 1:
            problems.append(f"requests_per_period is {self.requests_per_period} (must be >= 1)")
        if self.period_seconds < 1:
            problems.append(f"period_seconds is {self.period_seconds} (must be >= 1)")
        if self.burst < 0:
            problems.append(f"burst is {self.burst} (must be >= 0)")
        if self.failure_mode not in FAILURE_MODES:
            problems.append(f"failure_mode is {self.failure_mode!r} (must be one of {', '.join(FAILURE_MODES)})")
        return "; ".join(problems) or None

    def policy(self) -> Policy:
        """The tier's policy. Never raises: an invalid row gives a policy flagged ``invalid``.

        Such a policy is never enforced from its numbers (they are raised to the smallest valid
        ones only so it exists); the limiter answers its requests with the tier's failure mode,
        or ``open`` when that is invalid too, and check ``scaleops.E207`` reports the row.
        """
        problem = self.problem()
        if problem is None:
            return Policy(
                name=self.name,
                limit=self.requests_per_period,
                period=self.period_seconds,
                burst=self.burst,
                failure_mode=self.failure_mode,
                expose_headers=self.expose_headers,
            )
        return Policy(
            name=self.name,
            limit=max(1, self.requests_per_period),
            period=max(1, self.period_seconds),
            burst=max(0, self.burst),
            failure_mode=self.failure_mode if self.failure_mode in FAILURE_MODES else FAIL_OPEN,
            expose_headers=False,  # its numbers would be made up
            invalid=problem,
        )


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def usable(self) -> ApiKeyQuerySet:
        now = timezone.now()
        unexpired = models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        return self.filter(unexpired, revoked_at__isnull=True)

    def revoke(self, *, at: datetime | None = None) -> int:
        """Revoke every key of this queryset not revoked yet, and tell every instance at once.

        ``QuerySet.update()`` sends no signals, so it neither evicts the in-process key caches nor
        sets the Redis revocation markers that make other instances refuse a key on its next
        request; this does both (in one Redis round trip), like revoking a key in the admin.
        Returns the number of keys revoked.
        """
        # An explicit using(), else the database for writes: never a replica, it must see the newest keys.
        db = getattr(self, "_db", None) or router.db_for_write(self.model)
        keys = list(self.using(db).filter(revoked_at__isnull=True).values_list("pk", "prefix"))
        if not keys:
            return 0
        count = (
            ApiKey._base_manager.using(db).filter(pk__in=[pk for pk, _ in keys]).update(revoked_at=at or timezone.now())
        )
        # The rate limiter's receivers evict caches and set the Redis revocation markers.
        api_keys_changed.send(sender=ApiKey, changes=[(pk, prefix, True) for pk, prefix in keys])
        return count


_ApiKeyManagerBase = models.Manager.from_queryset(ApiKeyQuerySet)


class ApiKeyManager(_ApiKeyManagerBase["ApiKey"]):
    def revoke(self, *keys: ApiKey | int, at: datetime | None = None) -> int:
        """``ApiKey.objects.revoke(key, 42, ...)``: revoke the keys given (instances or ids) and publish it.

        ``ApiKey.objects.filter(...).revoke()`` revokes a queryset. Naming no key revokes nothing
        (``ApiKey.objects.all().revoke()`` says "every key" explicitly).
        """
        ids = _key_ids(keys)
        return self.filter(pk__in=ids).revoke(at=at) if ids else 0


def _key_ids(keys: Iterable[Any]) -> list[int]:
    return [int(key.pk if isinstance(key, models.Model) else key) for key in keys]


class ApiKey(models.Model):
    """An API key. Only its public prefix and the SHA-256 of the whole key are stored."""

    name = models.CharField(max_length=100)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="scaleops_api_keys"
    )
    tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="api_keys")
    prefix = models.CharField(max_length=12, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Updated by the usage rollup, at most once a minute of use."
    )

    objects = ApiKeyManager()

    class Meta:
        app_label = "scaleops"
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({mask(self.prefix)})"

    @classmethod
    def create_key(
        cls, *, name: str, tier: Tier, owner: Any = None, expires_at: datetime | None = None
    ) -> tuple[ApiKey, str]:
        """Create a key and return it with its secret, which is never stored and cannot be shown again."""
        new = generate_key()
        api_key = cls.objects.create(
            name=name, tier=tier, owner=owner, expires_at=expires_at, prefix=new.prefix, hashed_key=new.hashed
        )
        return api_key, new.key

    def assign_new_secret(self) -> str:
        """Fill prefix and hash of an unsaved key; returns the secret to show once."""
        new = generate_key()
        self.prefix, self.hashed_key = new.prefix, new.hashed
        return new.key

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def masked(self) -> str:
        return mask(self.prefix)

    def revoke(self) -> None:
        """Revoke this key; ``post_save`` evicts the caches and publishes the Redis marker."""
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])


class ApiKeyUsage(models.Model):
    """Allowed and limited requests of one key in one minute, rolled up from Redis."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="usage")
    minute = models.DateTimeField()
    allowed = models.PositiveIntegerField(default=0)
    limited = models.PositiveIntegerField(default=0)

    class Meta:
        app_label = "scaleops"
        verbose_name = "API key usage"
        constraints = [models.UniqueConstraint(fields=["api_key", "minute"], name="scaleops_apikeyusage_key_minute")]
        indexes = [models.Index(fields=["api_key", "-minute"], name="scaleops_usage_key_minute_idx")]

    def __str__(self) -> str:
        return f"{self.api_key_id} {self.minute:%Y-%m-%d %H:%M}: {self.allowed} allowed, {self.limited} limited"
