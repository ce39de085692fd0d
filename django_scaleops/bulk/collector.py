"""Keep Python's cyclic garbage collector off the objects that were there before a bulk call.

A bulk operation holds batches of rows (thousands of model instances or tuples) until they are
written. Every object it keeps survives the collector's young passes, and each time enough of them
have, the collector runs a full pass over every object in the process: Django, the project, its
caches. On the example's ``chat.Message`` that was 15-20% of a ``batch_create`` from a generator
of instances (benchmarks/bench_bulk.py). ``gc.freeze()`` moves the objects that exist now out of
the collector's passes and ``gc.unfreeze()`` puts them back, both in constant time; in between the
full passes only visit what was made since.

Left alone when the collector is off or something else froze objects already (a server that
freezes its heap before forking workers), and with ``SCALEOPS_BULK_FREEZE_GC = False``. Objects
that existed before the call and become unreachable cycles during it are collected after it.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

from django_scaleops.conf import conf

_lock = threading.Lock()
_holders = 0  # bulk calls running while we hold the freeze (threads, nested calls)
_frozen_by_us = False


@contextlib.contextmanager
def older_objects_frozen() -> Iterator[None]:
    """For the duration of a bulk call: the objects that existed before it are frozen (see module)."""
    global _holders, _frozen_by_us
    with _lock:
        if _holders == 0 and conf.SCALEOPS_BULK_FREEZE_GC and gc.isenabled() and gc.get_freeze_count() == 0:
            gc.freeze()
            _frozen_by_us = True
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _frozen_by_us:
                _frozen_by_us = False
                gc.unfreeze()
