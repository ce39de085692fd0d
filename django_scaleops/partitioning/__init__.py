"""Range partitioning by ``created_at``: declaration, migrations, maintenance, archive.

See docs/partitioning.md. Public names are re-exported here.
"""

from __future__ import annotations

from django_scaleops.partitioning.config import PartitionConfig, PartitionedModel, get_config, partitioned_models
from django_scaleops.partitioning.constraints import PartitionedForeignKey
from django_scaleops.partitioning.errors import PartitioningError
from django_scaleops.partitioning.ids import TimeOrderedIdField, UseTimeOrderedIds

__all__ = [
    "PartitionConfig",
    "PartitionedForeignKey",
    "PartitionedModel",
    "PartitioningError",
    "TimeOrderedIdField",
    "UseTimeOrderedIds",
    "get_config",
    "partitioned_models",
]
