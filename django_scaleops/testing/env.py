"""Build Django ``DATABASES`` and ``CACHES`` entries from service URLs."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

POSTGRES_SCHEMES = {"postgres", "postgresql", "pgsql"}


def database_from_url(url: str, **extra: Any) -> dict[str, Any]:
    """A ``DATABASES`` entry for a ``postgres://user:password@host:port/name?option=value`` URL.

    Query parameters become connection ``OPTIONS`` (``sslmode=require``); ``extra`` is merged in.
    """
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ValueError(f"not a PostgreSQL URL (scheme {parts.scheme!r}); expected postgres://user@host:port/name")
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ValueError("the database URL names no database: add /<name> after host:port")
    entry: dict[str, Any] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "OPTIONS": dict(parse_qsl(parts.query)),
    }
    options = extra.pop("OPTIONS", {})
    entry.update(extra)
    entry["OPTIONS"].update(options)
    return entry


def redis_cache_from_url(url: str, **options: Any) -> dict[str, Any]:
    """A ``CACHES`` entry for django-redis at ``url``."""
    if urlsplit(url).scheme not in {"redis", "rediss", "unix"}:
        raise ValueError("not a Redis URL: expected redis://host:port/db")
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": url,
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient", **options},
    }
