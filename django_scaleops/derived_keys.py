"""Keys derived from a secret for one purpose each: using one reveals nothing of the secret."""

from __future__ import annotations

import functools
import hashlib


@functools.lru_cache(maxsize=16)
def derived_key(secret: str, purpose: str) -> bytes:
    """A 32-byte key for ``purpose``, derived from ``secret`` (keyed BLAKE2b), memoised."""
    return hashlib.blake2b(secret.encode(), key=purpose.encode(), digest_size=32).digest()
