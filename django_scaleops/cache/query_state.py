"""A digest of a queryset's state before it is compiled: how two querysets built alike share a compile.

A queryset built for every read (``Message.objects.filter(conversation=c)[:50].cached(60)`` in a
view) is a new object each time, so the memo on the queryset (``keys.query_key``) never helps it.
Within one process, ``keys.query_key`` also looks up the compiled key by this digest: a query
already compiled here with the same state, in the same compile context, is not compiled again.

The digest is a BLAKE2b hash of the queryset's ``Query`` pickled, with the result shape. Pickling
keeps every value with its type (``1``, ``1.0``, ``True`` and ``"1"`` differ; so do
``Decimal("1.5")`` and ``Decimal("1.50")``, and two zones of one instant), and Django documents
that a pickled ``Query`` runs as the same query once unpickled: two querysets whose pickles are
equal compile to the same SQL. Some state compiles by what is outside it, and is refused (the
query is then compiled as before):

- classes from outside Django's ORM, ``datetime``, ``decimal``, ``uuid``, ``zoneinfo``, psycopg
  ranges and enums: a custom expression, lookup or field may read a thread-local, the language or
  a setting while it compiles, which no digest of its state can see. A class of yours that
  compiles from its own state alone says so in its body: ``scaleops_compiles_from_state = True``
  (a subclass must say it again);
- lazy translations (their text depends on the active language);
- model classes or querysets that cannot be pickled by reference (a model defined in a function).

Fields bound to a model are named by their model and name (a ``JSONField`` with an encoder of
yours is refused: the encoder runs while the SQL is compiled); a model instance in a filter is named
by its class and every column value it holds; a queryset inside an expression (``Subquery(qs)``
keeps the queryset it was given) by its query and result shape, never evaluated.
"""

from __future__ import annotations

import enum
import hashlib
import io
import pickle
from typing import Any

from django.db import models

# Modules (and their submodules) whose classes compile from their own state, the connection and
# the active time zone. Matched by name, never by prefix: a project's datetime_helpers is not datetime.
_TRUSTED_MODULES = (
    "django.db.models",
    "django.contrib.postgres",
    "django.contrib.contenttypes.fields",
    "django.db.backends.postgresql.psycopg_any",
    "psycopg.types.range",
    "datetime",
    "decimal",
    "uuid",
    "zoneinfo",
    "builtins",
)
# Django classes that hold more than state: managers and querysets (handled apart), Prefetch.
_REFUSED_MODULES = frozenset({"django.db.models.manager", "django.db.models.query"})


def _trusted(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in _TRUSTED_MODULES)


class Unmemoisable(Exception):
    """The query holds something whose compiled SQL its pickled state cannot vouch for."""


def _bound_field(model: type[models.Model], name: str) -> None:  # pragma: no cover - never called
    """Names a field bound to a model in a pickle that is hashed, never loaded."""


def _unbound_field(kind: type[models.Field[Any, Any]], attributes: dict[str, Any]) -> None:  # pragma: no cover
    """Names a field bound to no model by its class and attributes (hashed, never loaded)."""


def _model_instance(model: type[models.Model], values: tuple[Any, ...]) -> None:  # pragma: no cover
    """Names a model instance by its class and column values (hashed, never loaded)."""


def _queryset(kind: type[Any], query: Any, iterable: type[Any], fields: Any) -> None:  # pragma: no cover
    """Names a queryset held by an expression by its query and shape (hashed, never loaded)."""


# Per class: how it is pickled ("default", "field", "model", "queryset") or None (refused).
_VERDICTS: dict[type, str | None] = {}


def _verdict(kind: type) -> str | None:
    vouched = kind.__dict__.get("scaleops_compiles_from_state") is True  # this class, not a parent
    if issubclass(kind, type):
        return "default"  # a class: pickled by reference, which pickle checks is that very class
    if issubclass(kind, models.Model):
        return "model"
    if issubclass(kind, models.QuerySet):
        return "queryset"
    if issubclass(kind, models.Field):
        return "field" if vouched or _trusted(kind.__module__ or "") else None
    if issubclass(kind, enum.Enum):
        return "default"  # pickled as its class and value; the value is what the SQL receives
    module = kind.__module__ or ""
    if vouched:
        return "default"
    if module in _REFUSED_MODULES or not _trusted(module):
        return None
    return "default"


def _field_of(model: type[models.Model], name: str) -> Any:
    try:
        return model._meta.get_field(name)
    except Exception:  # FieldDoesNotExist
        return None


class _StatePickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        verdict = _VERDICTS.get(kind, "")
        if verdict == "":
            if len(_VERDICTS) > 10_000:  # classes made at run time: keep the memo bounded
                _VERDICTS.clear()
            verdict = _VERDICTS[kind] = _verdict(kind)
        if verdict == "default":
            return NotImplemented
        if verdict == "field":
            encoder = getattr(obj, "encoder", None)  # JSONField(encoder=...) runs while the SQL is compiled
            if encoder is not None and not str(getattr(encoder, "__module__", "")).startswith("django."):
                raise Unmemoisable(f"{kind.__qualname__} with the encoder {encoder!r}")
            model = getattr(obj, "model", None)
            if model is not None and obj.name and _field_of(model, obj.name) is obj:
                return _bound_field, (model, obj.name)
            # An output_field= (or an ArrayField's base_field): its attributes, but not the
            # counter every new field takes (it orders a model's fields, never the SQL).
            attributes = {k: v for k, v in obj.__dict__.items() if k != "creation_counter"}
            return _unbound_field, (kind, attributes)
        if verdict == "model":
            state = obj.__dict__
            values = tuple(
                (True, state[f.attname]) if f.attname in state else (False,) for f in obj._meta.concrete_fields
            )
            return _model_instance, (kind, values)
        if verdict == "queryset":
            return _queryset, (kind, obj.query, obj._iterable_class, getattr(obj, "_fields", None))
        raise Unmemoisable(f"{kind.__module__}.{kind.__qualname__}")


def state_digest(queryset: models.QuerySet[Any, Any]) -> bytes | None:
    """The digest of what decides ``queryset``'s compiled SQL and result shape, or None.

    None when the queryset prefetches (a ``Prefetch`` holds querysets compiled on their own) or
    holds anything refused above.
    """
    if getattr(queryset, "_prefetch_related_lookups", ()):
        return None
    out = io.BytesIO()
    try:
        _StatePickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(
            (queryset.query, queryset._iterable_class, getattr(queryset, "_fields", None))
        )
    except Exception:  # Unmemoisable, a class pickle cannot name, a value it cannot pickle
        return None
    return hashlib.blake2b(out.getbuffer(), digest_size=20).digest()
