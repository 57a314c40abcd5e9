"""The dev server's collector setting: what is alive at startup is frozen out of collections."""

from __future__ import annotations

import gc

from kumofire_jobs.local.gc_tuning import freeze_startup_heap


def test_the_startup_heap_is_frozen_and_later_objects_are_not() -> None:
    startup = [object() for _ in range(3)]
    try:
        freeze_startup_heap()
        frozen = gc.get_freeze_count()
        assert frozen > 0
        later = [[] for _ in range(10)]  # tracked containers made afterwards
        assert gc.get_freeze_count() == frozen
        assert all(gc.is_tracked(item) for item in later)
        assert startup
    finally:
        gc.unfreeze()
