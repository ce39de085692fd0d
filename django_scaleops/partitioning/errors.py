from __future__ import annotations


class PartitioningError(Exception):
    """A partitioning request that cannot be carried out; the message says why and what to do."""
