"""django-redis compressors that leave values under 1 KB alone.

Compressing small values costs CPU and saves little; django-redis' own compressors start at
15 bytes. Set one in the cache's options::

    CACHES = {"default": {..., "OPTIONS": {"COMPRESSOR": "django_scaleops.cache.compressors.ZlibCompressor"}}}

Reading stays compatible: django-redis decompresses only what was compressed.
"""

from __future__ import annotations

from django_redis.compressors.lzma import LzmaCompressor as _Lzma
from django_redis.compressors.zlib import ZlibCompressor as _Zlib

MIN_LENGTH = 1024


class ZlibCompressor(_Zlib):  # type: ignore[misc]
    min_length = MIN_LENGTH


class LzmaCompressor(_Lzma):  # type: ignore[misc]
    min_length = MIN_LENGTH
