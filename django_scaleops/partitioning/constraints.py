"""A database foreign key to a partitioned model, on ``(id, created_at)``.

PostgreSQL can reference a partitioned table only through a unique key that contains the
partition key. The pattern: the referencing row carries the referenced row's ``created_at``
(co-partitioned tables share it), Django's ``ForeignKey`` keeps ``db_constraint=False`` (it would
point at ``id`` alone), and this constraint adds the real, composite foreign key::

    class MessageRecipient(PartitionedModel):
        message = models.ForeignKey(Message, on_delete=models.CASCADE, db_constraint=False)
        created_at = models.DateTimeField()   # = message.created_at

        class Meta:
            constraints = [
                PartitionedForeignKey(
                    fields=["message", "created_at"], to="chat.Message", to_fields=["id", "created_at"],
                    name="recipient_message_fk",
                ),
            ]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.models.constraints import BaseConstraint

from django_scaleops.partitioning.identifiers import check_identifier, column_of, qn


class PartitionedForeignKey(BaseConstraint):
    """``FOREIGN KEY (fields) REFERENCES to (to_fields)``, deferred to commit like Django's own."""

    def __init__(self, *, fields: Sequence[str], to: str, to_fields: Sequence[str], name: str, **kwargs: Any) -> None:
        if len(fields) != len(to_fields) or len(fields) < 2:
            raise ValueError("PartitionedForeignKey needs matching fields and to_fields (at least two each)")
        self.fields = tuple(fields)
        self.to = to
        self.to_fields = tuple(to_fields)
        super().__init__(name=check_identifier(name, "constraint name"), **kwargs)

    def _columns(self, model: type[models.Model]) -> tuple[str, str, str]:
        target = model._meta.apps.get_model(self.to)
        local = ", ".join(qn(column_of(model, f)) for f in self.fields)
        remote = ", ".join(qn(column_of(target, f)) for f in self.to_fields)
        return local, qn(target._meta.db_table), remote

    def constraint_sql(self, model: type[models.Model] | None, schema_editor: BaseDatabaseSchemaEditor | None) -> str:
        assert model is not None
        local, table, remote = self._columns(model)
        return (
            f"CONSTRAINT {qn(self.name)} FOREIGN KEY ({local}) REFERENCES {table} ({remote})"
            " DEFERRABLE INITIALLY DEFERRED"
        )

    def create_sql(self, model: type[models.Model] | None, schema_editor: BaseDatabaseSchemaEditor | None) -> str:
        assert model is not None
        return f"ALTER TABLE {qn(model._meta.db_table)} ADD {self.constraint_sql(model, schema_editor)}"

    def remove_sql(self, model: type[models.Model] | None, schema_editor: BaseDatabaseSchemaEditor | None) -> str:
        assert model is not None
        return f"ALTER TABLE {qn(model._meta.db_table)} DROP CONSTRAINT {qn(self.name)}"

    def validate(self, *args: Any, **kwargs: Any) -> None:
        # The database checks it at commit; a form cannot know better than the ForeignKey field.
        return None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PartitionedForeignKey):
            return (self.name, self.fields, self.to.lower(), self.to_fields) == (
                other.name,
                other.fields,
                other.to.lower(),
                other.to_fields,
            )
        return super().__eq__(other)

    def __hash__(self) -> int:
        return hash((self.name, self.fields, self.to.lower(), self.to_fields))

    def deconstruct(self) -> tuple[str, Sequence[Any], dict[str, Any]]:
        path, args, kwargs = super().deconstruct()
        path = "django_scaleops.partitioning.PartitionedForeignKey"
        kwargs.update(fields=list(self.fields), to=self.to, to_fields=list(self.to_fields))
        return path, args, kwargs


def fill_partition_keys(model: type[models.Model], objs: Sequence[models.Model], using: str | None = None) -> None:
    """Give each row the ``created_at`` of the row it references, when it has none yet.

    For every ``PartitionedForeignKey(fields=[fk, key], to_fields=[pk, key])`` of ``model``: a row
    whose ``key`` is None takes it from the referenced instance when it is loaded, else from one
    query for all of them. ``PartitionedModel.save()`` and ``bulk_create()`` call this, so
    ``MessageRecipient(message=m, recipient=u)`` lands in ``m``'s partition, as its key requires.
    """
    for constraint in model._meta.constraints:
        if not isinstance(constraint, PartitionedForeignKey) or len(constraint.fields) != 2:
            continue
        fk = model._meta.get_field(constraint.fields[0])
        key, remote_key = constraint.fields[1], constraint.to_fields[1]
        if not isinstance(fk, models.ForeignKey):
            continue
        lookup: list[models.Model] = []
        for obj in objs:
            if getattr(obj, key) is not None:
                continue
            if fk.is_cached(obj) and getattr(obj, fk.name) is not None:
                setattr(obj, key, getattr(getattr(obj, fk.name), remote_key))
            elif getattr(obj, fk.attname) is not None:
                lookup.append(obj)
        if lookup:
            target = fk.related_model
            assert not isinstance(target, str)
            found = dict(
                target._base_manager.using(using)
                .filter(pk__in={getattr(obj, fk.attname) for obj in lookup})
                .values_list("pk", remote_key)
            )
            for obj in lookup:
                setattr(obj, key, found.get(getattr(obj, fk.attname)))
