"""Compression, conditional GET and Cache-Control, built on Django's own middleware and helpers.

What Django's ``GZipMiddleware`` + ``ConditionalGetMiddleware`` get wrong, and what changes here:

- the ETag is computed on the *uncompressed* body, by whichever of the two runs first, so the
  order of the two in ``MIDDLEWARE`` cannot change it (Django's, reversed, hashes a gzip body
  that carries random BREACH padding: a new ETag every response, so never a 304);
- it is made weak when the body is encoded, and ``If-None-Match`` compares weakly;
- HEAD gets 304 as GET does; ``If-None-Match`` takes precedence over ``If-Modified-Since``;
- ``Accept-Encoding`` q-values are honoured (``gzip;q=0`` means no gzip);
- only bodies of at least ``SCALEOPS_HTTP_COMPRESS_MIN_BYTES`` and of compressible types are
  compressed, never an already encoded body or one marked ``Cache-Control: no-transform``;
- br and zstd are offered when their packages are installed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import AsyncIterator
from typing import Any, cast

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.middleware.gzip import GZipMiddleware
from django.middleware.http import ConditionalGetMiddleware as DjangoConditionalGetMiddleware
from django.test.signals import setting_changed
from django.utils.cache import (
    get_conditional_response,
    patch_cache_control,
    patch_vary_headers,
)
from django.utils.http import parse_http_date_safe, quote_etag
from django.utils.text import compress_sequence, compress_string

from django_scaleops.conf import conf
from django_scaleops.http.negotiation import (
    GZIP_MAX_RANDOM_BYTES,
    choose_encoding,
    encoders,
    offered_encodings,
)
from django_scaleops.hybrid import HybridMiddleware

_COMMA = re.compile(r"\s*,\s*")
_CONDITIONAL_HEADERS = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_IF_MATCH", "HTTP_IF_UNMODIFIED_SINCE")


class _Policy:
    """The settings the middleware reads per response, read once (and again after a change)."""

    def __init__(self) -> None:
        self.min_bytes = conf.SCALEOPS_HTTP_COMPRESS_MIN_BYTES
        patterns = [fnmatch.translate(pattern.lower()) for pattern in conf.SCALEOPS_HTTP_COMPRESS_TYPES]
        self.types = re.compile("|".join(patterns) or "(?!)")  # no patterns: nothing is compressible
        self.offered = offered_encodings(conf.SCALEOPS_HTTP_ENCODINGS)
        self.streamable = [coding for coding in self.offered if coding == "gzip"]  # only gzip streams here
        self.compression_installed = "django_scaleops.http.middleware.CompressionMiddleware" in settings.MIDDLEWARE
        self.cache_paths = tuple(conf.SCALEOPS_HTTP_CACHE_PATHS)
        self.max_age = conf.SCALEOPS_HTTP_CACHE_MAX_AGE
        self._compressible: dict[str, bool] = {}

    def compressible(self, content_type: str | None) -> bool:
        if not content_type:
            return False
        known = self._compressible.get(content_type)
        if known is None:
            media_type = content_type.split(";", 1)[0].strip().lower()
            known = bool(self.types.match(media_type))
            if len(self._compressible) < 256:
                self._compressible[content_type] = known
        return known


_policy: _Policy | None = None


def policy() -> _Policy:
    global _policy
    if _policy is None:
        _policy = _Policy()
    return _policy


def _forget_policy(setting: str, **kwargs: Any) -> None:
    global _policy
    if setting.startswith("SCALEOPS_HTTP_") or setting == "MIDDLEWARE":
        _policy = None


setting_changed.connect(_forget_policy, dispatch_uid="django_scaleops.http.policy")
_UNPLANNED = "unplanned"


def credential_headers(request: HttpRequest) -> tuple[str, ...]:
    """The headers by which this request identifies a caller: Authorization, the API key, the session."""
    found: list[str] = []
    meta = request.META
    if meta.get("HTTP_AUTHORIZATION"):
        found.append("Authorization")
    key_header = conf.SCALEOPS_THROTTLE_KEY_HEADER
    if key_header and meta.get("HTTP_" + key_header.upper().replace("-", "_")):
        found.append(key_header)
    if settings.SESSION_COOKIE_NAME in request.COOKIES:
        found.append("Cookie")
    return tuple(found)


def _cache_control_directives(response: HttpResponseBase) -> set[str]:
    value = response.get("Cache-Control")
    if not value:
        return set()
    return {part.split("=", 1)[0].strip().lower() for part in _COMMA.split(value) if part}


def ensure_etag(request: HttpRequest, response: HttpResponseBase) -> None:
    """Give a GET/HEAD response an ETag of its uncompressed body, unless it cannot be right.

    No ETag for ``no-store``, streaming or already encoded bodies (an encoded body may carry
    random padding), nor for an empty HEAD body (the GET body it stands for is unknown).
    """
    if request.method not in ("GET", "HEAD") or response.has_header("ETag"):
        return
    if response.streaming or response.has_header("Content-Encoding"):
        return
    if "no-store" in _cache_control_directives(response):
        return
    if not 200 <= response.status_code < 300:
        return
    set_body_etag(response)


def set_body_etag(response: HttpResponseBase) -> None:
    """A strong ETag from the body's digest, when there is a body (as Django's ``set_response_etag``).

    SHA-256 cut to Django's 32 hex digits rather than MD5: with the SHA extensions most CPUs have,
    it hashes a 10 KB page in about a third of MD5's time, on every 200 this middleware answers.
    """
    content: bytes = response.content  # type: ignore[attr-defined]
    if content:
        response.headers["ETag"] = quote_etag(hashlib.sha256(content).hexdigest()[:32])


def conditional_response(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    """304 (or 412) when the request's preconditions say so; Django's RFC 9110 evaluation."""
    if request.method not in ("GET", "HEAD") or not any(header in request.META for header in _CONDITIONAL_HEADERS):
        return response
    etag = response.get("ETag")
    last_modified = parse_http_date_safe(response["Last-Modified"]) if response.has_header("Last-Modified") else None
    if not etag and not last_modified:
        return response
    # Django's stubs say HttpResponse; any response with headers works.
    conditional = get_conditional_response(
        request, etag=etag, last_modified=last_modified, response=cast(HttpResponse, response)
    )
    return response if conditional is None else conditional


def _weaken_etag(response: HttpResponseBase) -> None:
    etag = response.get("ETag")
    if etag and etag.startswith('"'):
        response.headers["ETag"] = "W/" + etag


def negotiable(response: HttpResponseBase) -> bool:
    """Whether the body may be compressed, so that its representation depends on Accept-Encoding."""
    if response.has_header("Content-Encoding") or "no-transform" in _cache_control_directives(response):
        return False
    current = policy()
    if not current.compressible(response.get("Content-Type")):
        return False
    return response.streaming or len(response.content) >= current.min_bytes  # type: ignore[attr-defined]


def planned_encoding(request: HttpRequest, response: HttpResponseBase) -> str | None:
    """For a negotiable response: add ``Vary: Accept-Encoding``, pick the coding, weaken the ETag if any.

    Both middleware call this, so a 304 made by either carries the ETag and Vary of the 200.
    """
    planned: str | None = getattr(response, "_scaleops_coding", _UNPLANNED)
    if planned != _UNPLANNED:
        return planned  # the other middleware already decided
    patch_vary_headers(response, ("Accept-Encoding",))
    current = policy()
    offered = current.streamable if response.streaming else current.offered
    coding = choose_encoding(request.META.get("HTTP_ACCEPT_ENCODING"), offered)
    if coding is not None:
        _weaken_etag(response)
    response._scaleops_coding = coding  # type: ignore[attr-defined]
    return coding


class ConditionalGetMiddleware(DjangoConditionalGetMiddleware):
    """Django's, for GET *and* HEAD, with the ETag taken from the uncompressed body.

    Placed inside or outside ``CompressionMiddleware``, the ETag is the same: whichever runs first
    hashes the uncompressed body.
    """

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        ensure_etag(request, response)
        if policy().compression_installed and negotiable(response):
            planned_encoding(request, response)
        return conditional_response(request, response)


class CompressionMiddleware(GZipMiddleware):
    """gzip (and br / zstd when installed) by ``Accept-Encoding`` q-values, with ETag and 304.

    Subclasses Django's ``GZipMiddleware`` for its sync/async plumbing and BREACH padding.
    """

    max_random_bytes = GZIP_MAX_RANDOM_BYTES

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if not negotiable(response):
            return response
        ensure_etag(request, response)
        coding = planned_encoding(request, response)
        # Answer 304 before spending time compressing a body that will not be sent.
        conditional = conditional_response(request, response)
        if conditional is not response or coding is None:
            return conditional
        if response.streaming:
            self._compress_stream(response)
        else:
            content: bytes = response.content  # type: ignore[attr-defined]
            compressed = encoders()[coding](content)
            if len(compressed) >= len(content):
                _unweaken_if_ours(response)
                return response
            response.content = compressed  # type: ignore[attr-defined]
            response.headers["Content-Length"] = str(len(compressed))
        response.headers["Content-Encoding"] = coding
        return response

    def _compress_stream(self, response: Any) -> None:
        if response.is_async:
            original: AsyncIterator[bytes] = response.streaming_content

            async def gzip_chunks() -> AsyncIterator[bytes]:
                # One gzip member per chunk, as Django does: valid gzip, flushed as it comes.
                async for chunk in original:
                    yield compress_string(chunk, max_random_bytes=self.max_random_bytes)

            response.streaming_content = gzip_chunks()
        else:
            response.streaming_content = compress_sequence(
                response.streaming_content, max_random_bytes=self.max_random_bytes
            )
        if response.has_header("Content-Length"):
            del response.headers["Content-Length"]


def _unweaken_if_ours(response: HttpResponseBase) -> None:
    # The body went out uncompressed after all, so it is byte-identical: the ETag may stay strong.
    etag = response.get("ETag", "")
    if etag.startswith('W/"'):
        response.headers["ETag"] = etag[2:]


class CacheControlMiddleware(HybridMiddleware):
    """A default ``Cache-Control: max-age`` for successful GET/HEAD under ``SCALEOPS_HTTP_CACHE_PATHS``,
    and private responses to credentials on every path.

    A view's own Cache-Control is kept. A response to a request that carries credentials
    (``Authorization``, the API-key header, the session cookie), or that sets cookies or varies on
    Cookie or Authorization, is made ``private`` so shared caches never keep one caller's response
    for another. Only where the view asks for shared caching itself (``public`` or ``s-maxage``)
    does it stay shared, with ``Vary`` on each credential the request carried. ``Vary`` is merged,
    never replaced.
    """

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        response: HttpResponseBase = self.get_response(request)
        self.apply(request, response)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response: HttpResponseBase = await self.get_response(request)
        self.apply(request, response)
        return response

    def apply(self, request: HttpRequest, response: HttpResponseBase) -> None:
        if request.method not in ("GET", "HEAD") or response.status_code not in (200, 203, 204, 206, 304):
            return
        current = policy()
        on_cache_path = bool(current.cache_paths) and request.path.startswith(current.cache_paths)
        credentials = credential_headers(request)
        if not on_cache_path and not (credentials and response.has_header("Cache-Control")):
            return
        if on_cache_path and not response.has_header("Cache-Control"):
            patch_cache_control(response, max_age=current.max_age)
        vary = {value.strip().lower() for value in _COMMA.split(response.get("Vary", "")) if value}
        directives = _cache_control_directives(response)
        if not directives & {"private", "no-store"}:
            if response.cookies or vary & {"cookie", "authorization", "*"}:
                patch_cache_control(response, private=True)  # Django drops a "public" it contradicts
            elif credentials and directives & {"public", "s-maxage"}:
                # The view asked for shared caching: a shared cache keeps one copy per credential.
                patch_vary_headers(response, credentials)
            elif credentials:
                patch_cache_control(response, private=True)
        if not on_cache_path:
            return
        if current.compressible(response.get("Content-Type")):
            patch_vary_headers(response, ("Accept-Encoding",))
