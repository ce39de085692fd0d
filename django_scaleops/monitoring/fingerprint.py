"""Statement fingerprints: the SQL with literals and placeholder lists folded, so that the queries
``WHERE id = 1`` and ``WHERE id = 2`` (or ``IN (%s, %s)`` and ``IN (%s, %s, %s)``) are one statement.
"""

from __future__ import annotations

import hashlib
import re

_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w.\"])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b")
_PLACEHOLDER = re.compile(r"%s|%\(\w+\)s|\$\d+")
_TUPLE = r"\(\s*\?(?:\s*,\s*\?)*\s*\)"
_ROWS = re.compile(rf"({_TUPLE})(?:\s*,\s*{_TUPLE})+")
_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_SPACE = re.compile(r"\s+")

MAX_TEXT = 2000


def normalize(sql: str) -> str:
    """The statement with every literal and placeholder as ``?`` and lists as ``(...)``."""
    text = _STRING.sub("?", sql)
    text = _PLACEHOLDER.sub("?", text)
    text = _NUMBER.sub("?", text)
    text = _ROWS.sub(r"\1", text)  # multi-row VALUES: keep the first row
    text = _LIST.sub("(...)", text)
    return _SPACE.sub(" ", text).strip()[:MAX_TEXT]


def fingerprint_id(text: str) -> str:
    """A short stable id for a normalized statement (the same in every process)."""
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class FingerprintCache:
    """Remembers the fingerprint of each SQL string seen, up to ``size`` strings.

    The ORM sends the same few hundred SQL strings over and over, so the regexes run once per
    string, not once per query. When full, the cache starts over rather than tracking recency.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._known: dict[str, tuple[str, str]] = {}

    def get(self, sql: str) -> tuple[str, str]:
        """``(id, normalized text)`` of ``sql``."""
        known = self._known.get(sql)
        if known is not None:
            return known
        text = normalize(sql)
        known = (fingerprint_id(text), text)
        if len(self._known) >= self.size:
            self._known = {}
        self._known[sql] = known
        return known
