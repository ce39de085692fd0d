"""Signals other capabilities listen to. Each states its sender and keyword arguments."""

from __future__ import annotations

from django.dispatch import Signal

# Sent by the bulk operations as soon as a batch has written rows, inside its transaction (the
# COPY of batch_create passes by every execute wrapper, so this is how the cache hears of it).
# sender: the model class; kwargs: using (alias), operation ("create" | "update" | "delete"),
# pks (list of primary keys written, or None when unknown). Cache invalidation listens to it.
bulk_rows_written = Signal()

# Sent by the bulk operations after each committed batch that wrote rows (never on rollback);
# same arguments as bulk_rows_written.
bulk_write_committed = Signal()

# Sent when reads fall back to the primary because no replica is usable, and when one returns.
# sender: the router class; kwargs: alias (replica alias), state (new health state string).
replica_state_changed = Signal()

# Sent when API keys changed without post_save (ApiKey.objects.revoke(), publish_key_changes()).
# sender: the ApiKey model; kwargs: changes, a list of (id, prefix, revoked). The rate limiter
# listens: it evicts the keys from its caches and sets or clears the Redis revocation markers.
api_keys_changed = Signal()
