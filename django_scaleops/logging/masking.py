"""Secret masking in two layers: sensitive keys (by substring) and secret-shaped values (by pattern).

One ``Masker`` cleans log records, Sentry events and Datadog span tags alike. Keys are matched
case-insensitively by substring (``api_token`` and ``access_token`` are caught, unlike an exact-name
denylist), with an allowlist of harmless suffixes (``token_count``, ``card_id``). Values are matched
by shape: Bearer/Basic credentials, JWTs, PEM private keys, our API keys, common provider keys,
``key=value`` pairs with a sensitive key, US SSNs and card numbers that pass the Luhn check.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import functools
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "[MASKED]"
TRUNCATED = "[TRUNCATED]"

DEFAULT_SENSITIVE_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "api_key",
    "apikey",
    "api-key",
    "access_key",
    "private_key",
    "authorization",
    "credential",
    "cookie",
    "session",
    "csrf",
    "ssn",
    "card",
    "cvv",
    "cvc",
    "iban",
    "signature",
)
# A key ending like this names something about a secret, not the secret itself.
DEFAULT_ALLOWED_SUFFIXES: tuple[str, ...] = (
    "_id",
    "_ids",
    "_count",
    "_type",
    "_types",
    "_length",
    "_len",
    "_expiry",
    "_expires",
    "_expires_at",
    "_at",
    "_ttl",
    "_prefix",
    "_brand",
    "_last4",
    "_enabled",
    "_required",
    "_url_name",
)
# Always secret, whatever the suffix rule says (Django's own cookie and form field names).
ALWAYS_SENSITIVE_KEYS: frozenset[str] = frozenset(
    {"sessionid", "session_id", "session_key", "csrftoken", "csrfmiddlewaretoken", "set-cookie"}
    # Short query-string names that would match far too much as substrings.
    | {"key", "sig", "auth", "pass", "pin", "otp", "code_verifier", "client_secret"}
)

# Issuer identification numbers of the card networks, so long digit runs (timestamps, order
# numbers) that happen to pass Luhn are not taken for cards: Visa, Mastercard, Amex, Discover,
# Diners, JCB, UnionPay.
_CARD = (
    r"(?<![\w-])(?:4|5[1-5]|2[2-7]|3[47]|3[0689]|6(?:011|5|4[4-9]|2))"
    r"(?:[ -]?\d){11,17}(?![\w-])"
)

VALUE_PATTERNS: dict[str, str] = {
    "pem": r"-----BEGIN[A-Z ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END[A-Z ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    "scheme": r"(?i:\b(?:bearer|basic|token|digest)\s+)(?P<scheme_value>[A-Za-z0-9._~+/=-]{8,})",
    "jwt": r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
    # Our API keys: "sops_<public prefix>_<secret>" (the prefix alone is harmless and logged).
    "scaleops_key": r"\bsops_[a-z0-9]{12}_[A-Za-z0-9_-]{16,}",
    "provider": (
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
        r"|\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}"
        r"|\bgh[pousr]_[A-Za-z0-9]{30,}"
        r"|\bgithub_pat_[A-Za-z0-9_]{22,}"
        r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"
        r"|\bAIza[0-9A-Za-z_-]{35}"
        r"|\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"
        r"|\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}"
        r"|\bglpat-[A-Za-z0-9_-]{20,}"
        r"|\bnpm_[A-Za-z0-9]{36}"
    ),
    # password=..., "token": "...", api_key: ..., in query strings, JSON, reprs; the key decides.
    "key_value": (
        r"(?<![A-Za-z0-9_.\-])(?P<kv_key>[A-Za-z0-9_.\-]{1,64})(?P<kv_sep>['\"]?\s*[=:]\s*[bru]?)"
        r"(?P<kv_value>'[^'\n]*'|\"[^\"\n]*\"|(?i:(?:bearer|basic|token|digest)\s+)?[^\s'\"&,;)}\][]+)"
    ),
    "ssn": r"(?<![\w-])(?!000|666|9\d\d)\d{3}(?P<ssn_sep>[- ])(?!00)\d{2}(?P=ssn_sep)(?!0000)\d{4}(?![\w-])",
    "card": _CARD,
}

DIGIT_PATTERNS = ("ssn", "card")
# Literal fragments that every value pattern needs (lower-cased). A text holding none of them, and
# no run of four digits, cannot match, so the pattern regexes (slow in Python) are skipped.
VALUE_TRIGGERS: tuple[str, ...] = (
    "begin",
    "bearer",
    "basic",
    "token",
    "digest",
    "eyj",
    "sops_",
    "akia",
    "asia",
    "_live_",
    "_test_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat",
    "xox",
    "aiza",
    "sg.",
    "sk-",
    "glpat",
    "npm_",
)
_FOUR_DIGITS = re.compile(r"\d\d\d\d")
# The shortest text any rule can match ("pin=1234" has 8 characters; "pwd=x" 5).
MIN_SECRET_TEXT = 5
RECENT_SIZE = 2048
RECENT_MAX_LENGTH = 256


def literal_trie_regex(words: Iterable[str]) -> str:
    """One regex matching any of ``words``, as a trie: far faster than a flat alternation in ``re``."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        branches = [re.escape(char) + emit(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return emit(trie)


def luhn_ok(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


class Masker:
    """Mask secrets in text and in nested data.

    Args:
        sensitive_keys: substrings that make a key sensitive (case-insensitive).
        allowed_suffixes: key endings that make a matching key harmless again (``token_count``).
        extra_patterns: more value regexes (each whole match is masked).
        max_depth: containers nested deeper than this are replaced by ``[TRUNCATED]``.
        max_items: items of a container beyond this are dropped (a ``[TRUNCATED]`` marker stays).
        max_string: strings longer than this are cut (after masking) with a ``[TRUNCATED]`` marker.
    """

    def __init__(
        self,
        sensitive_keys: Iterable[str] = DEFAULT_SENSITIVE_KEYS,
        allowed_suffixes: Iterable[str] = DEFAULT_ALLOWED_SUFFIXES,
        extra_patterns: Iterable[str] = (),
        *,
        max_depth: int = 8,
        max_items: int = 200,
        max_string: int = 16_384,
    ) -> None:
        self.sensitive_keys = tuple(k.lower() for k in sensitive_keys)
        self.allowed_suffixes = tuple(s.lower() for s in allowed_suffixes)
        self.extra_patterns = tuple(extra_patterns)
        self.max_depth = max_depth
        self.max_items = max_items
        self.max_string = max_string
        self._word_steps = [
            re.compile(f"(?P<{name}>{pattern})")
            for name, pattern in VALUE_PATTERNS.items()
            if name not in DIGIT_PATTERNS
        ] + [re.compile(pattern) for pattern in self.extra_patterns]
        self._digit_steps = [re.compile(f"(?P<{name}>{VALUE_PATTERNS[name]})") for name in DIGIT_PATTERNS]
        self._key_value = self._word_steps[list(VALUE_PATTERNS).index("key_value")]
        words = {*self.sensitive_keys, *ALWAYS_SENSITIVE_KEYS, *VALUE_TRIGGERS}
        # Without a fixed trigger for the user's own patterns, they always run.
        self._word_screen = None if self.extra_patterns else re.compile(literal_trie_regex(sorted(words)))
        self.is_sensitive_key = functools.lru_cache(maxsize=4096)(self._is_sensitive_key)
        self._recent: dict[str, str] = {}

    def _is_sensitive_key(self, key: str) -> bool:
        lowered = key.lower()
        if lowered in ALWAYS_SENSITIVE_KEYS:
            return True
        if not any(word in lowered for word in self.sensitive_keys):
            return False
        return not lowered.replace("-", "_").endswith(self.allowed_suffixes)

    def _replace(self, match: re.Match[str]) -> str:
        kind = match.lastgroup
        if kind == "scheme":
            credential = match.group("scheme_value")
            # "invalid token provided" is prose, not a credential: require a digit or length.
            if len(credential) < 20 and not any(c.isdigit() for c in credential):
                return match.group(0)
            return match.group(0)[: match.start("scheme_value") - match.start()] + MASK
        if kind == "key_value":
            key, separator, value = match.group("kv_key", "kv_sep", "kv_value")
            if not self.is_sensitive_key(key.rsplit(".", 1)[-1]):
                # Not a secret key, but the value may hold pairs of its own (url=/a?token=x).
                return key + separator + self._key_value.sub(self._replace, value)
            if value[0] in "'\"":
                return f"{key}{separator}{value[0]}{MASK}{value[0]}"
            return key + separator + MASK
        if kind == "card":
            digits = re.sub(r"[ -]", "", match.group(0))
            if not 13 <= len(digits) <= 19 or not luhn_ok(digits):
                return match.group(0)
        return MASK

    def mask_text(self, text: str) -> str:
        """``text`` with every secret-shaped value replaced by ``[MASKED]``."""
        if len(text) < MIN_SECRET_TEXT:
            return text
        cached = self._recent.get(text)
        if cached is not None:
            return cached
        masked = text
        if self._word_screen is None or self._word_screen.search(text.lower()) is not None:
            for regex in self._word_steps:
                masked = regex.sub(self._replace, masked)
        if _FOUR_DIGITS.search(masked) is not None:
            for regex in self._digit_steps:
                masked = regex.sub(self._replace, masked)
        if len(masked) > self.max_string:
            masked = masked[: self.max_string] + TRUNCATED
        if len(text) <= RECENT_MAX_LENGTH:
            # Log text repeats a lot (paths, static messages): remember recent answers.
            if len(self._recent) >= RECENT_SIZE:
                self._recent.clear()
            self._recent[text] = masked
        return masked

    def mask(self, value: Any, depth: int = 0) -> Any:
        """A copy of ``value`` with sensitive keys and secret-shaped strings masked.

        Mappings and sequences are walked up to ``max_depth``; objects of other types become
        their masked ``str()``, so no ``repr`` can carry a secret past the masker.
        """
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            return self.mask_text(value)
        if depth >= self.max_depth and isinstance(value, (Mapping, list, tuple, set, frozenset)):
            return TRUNCATED
        if isinstance(value, Mapping):
            result: dict[Any, Any] = {}
            for index, (key, item) in enumerate(value.items()):
                if index >= self.max_items:
                    result[TRUNCATED] = f"{len(value) - index} more"
                    break
                name = key if isinstance(key, str) else str(key)
                result[name] = MASK if self.is_sensitive_key(name) else self.mask(item, depth + 1)
            return result
        if isinstance(value, (list, tuple, set, frozenset)):
            items = [self.mask(item, depth + 1) for _, item in zip(range(self.max_items), value, strict=False)]
            if len(value) > self.max_items:
                items.append(TRUNCATED)
            return items
        if isinstance(value, (datetime.date, datetime.time, datetime.timedelta, uuid.UUID, decimal.Decimal)):
            return value
        if isinstance(value, enum.Enum):
            return self.mask(value.value, depth)
        if isinstance(value, bytes):
            return self.mask_text(value.decode("utf-8", "replace"))
        try:
            text = str(value)
        except Exception:  # a broken __str__ must not break logging
            text = f"<unprintable {type(value).__name__}>"
        return self.mask_text(text)


@functools.lru_cache(maxsize=8)
def _build(keys: tuple[str, ...], suffixes: tuple[str, ...], patterns: tuple[str, ...], max_depth: int) -> Masker:
    return Masker(keys, suffixes, patterns, max_depth=max_depth)


def get_masker(*, max_depth: int = 8) -> Masker:
    """The masker configured by the ``SCALEOPS_LOG_MASK_*`` settings (built once per configuration)."""
    from django_scaleops.conf import conf

    return _build(
        tuple(DEFAULT_SENSITIVE_KEYS) + tuple(conf.SCALEOPS_LOG_MASK_EXTRA_KEYS),
        tuple(DEFAULT_ALLOWED_SUFFIXES),
        tuple(conf.SCALEOPS_LOG_MASK_EXTRA_PATTERNS),
        max_depth,
    )
