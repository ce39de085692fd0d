"""API key format, generation and hashing.

A key looks like ``sops_<prefix>_<secret>``: the 12-character prefix is public (stored, shown in
the admin, used to find the row), the secret is 32 random bytes. Only the SHA-256 of the whole key
is stored: the secret has 256 bits of entropy, so a fast hash is safe, where Django's password
hashers would cost hundreds of milliseconds a request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

KEY_PREFIX = "sops_"
PREFIX_LENGTH = 12
MAX_KEY_LENGTH = 128
_ALPHABET = string.ascii_lowercase + string.digits
_KEY = re.compile(rf"^{KEY_PREFIX}([a-z0-9]{{{PREFIX_LENGTH}}})_([A-Za-z0-9_-]{{43}})$")


@dataclass(frozen=True)
class NewKey:
    """A freshly generated key: show ``key`` once, store ``prefix`` and ``hashed``."""

    key: str
    prefix: str
    hashed: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def generate_key() -> NewKey:
    prefix = "".join(secrets.choice(_ALPHABET) for _ in range(PREFIX_LENGTH))
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(key=key, prefix=prefix, hashed=hash_key(key))


def parse_prefix(raw: str) -> str | None:
    """The public prefix of a well-formed key, or None for anything else (never raises)."""
    if not raw or len(raw) > MAX_KEY_LENGTH or not raw.isascii():
        return None
    match = _KEY.match(raw)
    return match.group(1) if match else None


def matches(raw: str, hashed: str) -> bool:
    """Constant-time comparison of a presented key with a stored hash."""
    return hmac.compare_digest(hash_key(raw), hashed)


def mask(prefix: str) -> str:
    """How a key is shown anywhere but the moment it is created."""
    return f"{KEY_PREFIX}{prefix}_…"
