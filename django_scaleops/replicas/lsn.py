"""PostgreSQL WAL positions (``pg_lsn``, written ``"16/B374D848"``) as comparable integers."""

from __future__ import annotations


def parse_lsn(text: str) -> int:
    """``"16/B374D848"`` -> integer. Raises ValueError on anything else."""
    high, sep, low = text.strip().partition("/")
    if not sep or not high or not low or len(high) > 8 or len(low) > 8:
        raise ValueError(f"not a WAL position: {text!r}")
    try:
        return (int(high, 16) << 32) + int(low, 16)
    except ValueError:
        raise ValueError(f"not a WAL position: {text!r}") from None


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"
