"""Signals other capabilities listen to. Each states its sender and keyword arguments."""

from __future__ import annotations

from django.dispatch import Signal

# Sent by the bulk operations after each committed batch that wrote rows (never on rollback).
# sender: the model class; kwargs: using (alias), operation ("create" | "update" | "delete"),
# pks (list of primary keys written, or None when unknown). Cache invalidation listens to it.
bulk_write_committed = Signal()

# Sent when reads fall back to the primary because no replica is usable, and when one returns.
# sender: the router class; kwargs: alias (replica alias), state (new health state string).
replica_state_changed = Signal()
