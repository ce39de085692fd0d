"""Lossless, typed encoding of what a cache key is made of.

Two key parts that differ in any way that could change a result must encode differently: never
``repr()`` (psycopg truncates the reprs of ``Jsonb`` and binary values, and an object's ``repr``
may be its ``__str__``). Each value is written as a type tag and a length-prefixed payload, so
``1`` and ``"1"``, ``[1, 2]`` and ``(1, 2)``, ``b"ab"`` and ``"ab"`` all differ.

``encode`` knows plain Python values (the arguments of ``@cached_function``) and refuses anything
else with :class:`UnkeyableValue`. ``encode_sql_param`` also takes whatever psycopg can send
(``Jsonb``, ranges, custom adapters): it keys those by the bytes the server would receive.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import uuid
from collections.abc import Callable
from typing import Any

from django.db import models


class UnkeyableValue(TypeError):
    """A value that cannot be turned into a cache key safely."""


def encode(value: Any) -> bytes:
    """The typed, lossless encoding of a plain Python value (see the module docstring)."""
    out: list[bytes] = []
    _write(value, out, _refuse)
    return b"".join(out)


def encode_sql_param(value: Any) -> bytes:
    """Like :func:`encode`, but what Python alone cannot key is keyed by psycopg's dump of it."""
    out: list[bytes] = []
    _write(value, out, _dump_with_psycopg)
    return b"".join(out)


def _chunk(tag: bytes, payload: bytes, out: list[bytes]) -> None:
    out.append(tag)
    out.append(len(payload).to_bytes(4, "big"))
    out.append(payload)


def _type_name(value: Any) -> bytes:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}".encode()


def _write(value: Any, out: list[bytes], other: Callable[[Any, list[bytes]], None]) -> None:
    kind = type(value)
    writer = _WRITERS.get(kind)
    if writer is not None:
        writer(value, out, other)
        return
    # Subclasses (psycopg's Int4, str enums, ...) keep their own type in the key.
    for base, writer in _WRITERS.items():
        if isinstance(value, base):
            _chunk(b"T", _type_name(value), out)
            writer(value, out, other)
            return
    if isinstance(value, enum.Enum):
        _chunk(b"E", _type_name(value), out)
        _write(value.value, out, other)
        return
    if isinstance(value, models.Model):
        _chunk(b"M", value._meta.label_lower.encode(), out)
        _write(value.pk, out, other)
        return
    if isinstance(value, type) and issubclass(value, models.Model):
        _chunk(b"C", value._meta.label_lower.encode(), out)
        return
    other(value, out)


def _scalar(tag: bytes, to_bytes: Callable[[Any], bytes]) -> Callable[[Any, list[bytes], Any], None]:
    def write(value: Any, out: list[bytes], other: Any) -> None:
        _chunk(tag, to_bytes(value), out)

    return write


def _sequence(tag: bytes) -> Callable[[Any, list[bytes], Any], None]:
    def write(value: Any, out: list[bytes], other: Any) -> None:
        _chunk(tag, len(value).to_bytes(4, "big"), out)
        for item in value:
            _write(item, out, other)

    return write


def _unordered(tag: bytes) -> Callable[[Any, list[bytes], Any], None]:
    # Iteration order of a set varies between processes: sort the encoded members.
    def write(value: Any, out: list[bytes], other: Any) -> None:
        members = []
        for item in value:
            encoded: list[bytes] = []
            _write(item, encoded, other)
            members.append(b"".join(encoded))
        _chunk(tag, len(members).to_bytes(4, "big"), out)
        out.extend(sorted(members))

    return write


def _write_dict(value: dict[Any, Any], out: list[bytes], other: Any) -> None:
    pairs = []
    for key, item in value.items():
        encoded: list[bytes] = []
        _write(key, encoded, other)
        _write(item, encoded, other)
        pairs.append(b"".join(encoded))
    _chunk(b"D", len(pairs).to_bytes(4, "big"), out)
    out.extend(sorted(pairs))


def _datetime_bytes(value: datetime.datetime | datetime.time) -> bytes:
    # isoformat carries the offset; the zone's name too, for zones that share an offset today.
    return f"{value.isoformat()}|{value.tzinfo}|{value.fold}".encode()


_WRITERS: dict[type, Callable[[Any, list[bytes], Any], None]] = {
    type(None): _scalar(b"N", lambda v: b""),
    bool: _scalar(b"B", lambda v: b"1" if v else b"0"),
    int: _scalar(b"I", lambda v: str(v).encode()),
    float: _scalar(b"F", lambda v: v.hex().encode()),
    str: _scalar(b"S", lambda v: v.encode("utf-8", "surrogatepass")),
    bytes: _scalar(b"Y", bytes),
    bytearray: _scalar(b"Y", bytes),
    memoryview: _scalar(b"Y", bytes),
    decimal.Decimal: _scalar(b"d", lambda v: str(v).encode()),
    datetime.datetime: _scalar(b"t", _datetime_bytes),
    datetime.date: _scalar(b"a", lambda v: v.isoformat().encode()),
    datetime.time: _scalar(b"h", _datetime_bytes),
    datetime.timedelta: _scalar(b"z", lambda v: f"{v.days},{v.seconds},{v.microseconds}".encode()),
    uuid.UUID: _scalar(b"U", lambda v: v.bytes),
    list: _sequence(b"L"),
    tuple: _sequence(b"P"),
    set: _unordered(b"s"),
    frozenset: _unordered(b"f"),
    dict: _write_dict,
}


def _refuse(value: Any, out: list[bytes]) -> None:
    raise UnkeyableValue(f"a {type(value).__module__}.{type(value).__qualname__} cannot be keyed safely")


def _dump_with_psycopg(value: Any, out: list[bytes]) -> None:
    from psycopg import adapters
    from psycopg.adapt import PyFormat, Transformer

    json_dumps = getattr(value, "dumps", None)
    if hasattr(value, "obj") and callable(json_dumps):
        # psycopg's Json/Jsonb: the text its own dumps function gives (Django passes JSONField's encoder).
        _chunk(b"J", _type_name(value) + b"\0" + str(json_dumps(value.obj)).encode(), out)
        return
    try:
        dumper = Transformer(adapters).get_dumper(value, PyFormat.AUTO)
        dumped = dumper.dump(value)
    except Exception as exc:
        raise UnkeyableValue(
            f"a {type(value).__module__}.{type(value).__qualname__} parameter cannot be keyed: {exc}"
        ) from exc
    _chunk(b"X", _type_name(value) + b"\0" + str(dumper.oid).encode() + b"\0" + bytes(dumped or b""), out)
