"""``Accept-Encoding`` negotiation with q-values (RFC 9110, section 12.5.3) and the encoders."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache

from django.utils.text import compress_string

Encoder = Callable[[bytes], bytes]

# gzip's "x-gzip" alias, as RFC 9110 asks recipients to treat it.
_ALIASES = {"x-gzip": "gzip"}
# BREACH mitigation: Django pads each gzip body with up to 100 random bytes in the file name field.
GZIP_MAX_RANDOM_BYTES = 100


def parse_accept_encoding(header: str) -> dict[str, float]:
    """Coding -> q-value. Elements with a malformed q are dropped; the first mention of a coding wins."""
    preferences: dict[str, float] = {}
    for element in header.split(","):
        coding, *parameters = (part.strip() for part in element.split(";"))
        if not coding:
            continue
        quality: float | None = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = None
                if quality is not None and (math.isnan(quality) or not 0 <= quality <= 1):
                    quality = None
        if quality is None:
            continue
        coding = coding.lower()
        preferences.setdefault(_ALIASES.get(coding, coding), quality)
    return preferences


def choose_encoding(header: str | None, offered: Sequence[str]) -> str | None:
    """The offered coding the client prefers, or None for the identity (uncompressed) body.

    ``offered`` is in the server's order of preference, used to break ties between equal q-values.
    No header (or an empty one) means identity: compressing for clients that never asked is a risk
    for no gain.
    """
    if not header:
        return None
    preferences = parse_accept_encoding(header)
    wildcard = preferences.get("*", 0.0)
    best, best_quality = None, 0.0
    for coding in offered:
        quality = preferences.get(coding, wildcard)
        if quality > best_quality:
            best, best_quality = coding, quality
    # An explicitly preferred identity ("gzip;q=0.5, identity") beats a less wanted coding.
    if best is not None and preferences.get("identity", -1.0) > best_quality:
        return None
    return best


def _gzip(data: bytes) -> bytes:
    return compress_string(data, max_random_bytes=GZIP_MAX_RANDOM_BYTES)


@lru_cache(maxsize=1)
def encoders() -> dict[str, Encoder]:
    """The encoders this interpreter has: gzip always, br and zstd when their packages are installed."""
    available: dict[str, Encoder] = {"gzip": _gzip}
    try:
        import brotli  # type: ignore[import-untyped,unused-ignore]

        # Quality 4: most of brotli's gain at a dynamic-response speed (11 is for static files).
        available["br"] = lambda data: bytes(brotli.compress(data, quality=4))
    except ImportError:
        pass
    try:
        import zstandard

        # A compressor object is not safe to share between threads: one per response.
        available["zstd"] = lambda data: bytes(zstandard.ZstdCompressor(level=3).compress(data))
    except ImportError:
        pass
    return available


def offered_encodings(configured: Sequence[str]) -> list[str]:
    """The configured encodings this interpreter can produce, in the configured order."""
    available = encoders()
    return [coding for coding in configured if coding in available]
