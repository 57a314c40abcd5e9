"""The dev server's collector setting: what is alive at startup is frozen out of collections,
garbage made before is collected first, and what comes later is collected as before."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from kumofire_jobs.local.gc_tuning import freeze_startup_heap


class Node:
    """A container the collector tracks, which a weak reference can watch."""

    def __init__(self) -> None:
        self.other: Node | None = None


def garbage_cycle() -> weakref.ref[Node]:
    """An unreachable reference cycle: only the cyclic collector frees it."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def walked_by_collections(obj: object) -> bool:
    """Whether the collector's generations hold `obj` (the frozen, permanent one is not among
    them: `gc.get_objects()` lists generations 0-2 only)."""
    return any(item is obj for item in gc.get_objects())


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_the_startup_heap_is_frozen_after_a_collection() -> None:
    startup = Node()
    startup_garbage = garbage_cycle()
    assert walked_by_collections(startup)
    assert startup_garbage() is not None
    assert gc.get_freeze_count() == 0

    freeze_startup_heap()

    assert startup_garbage() is None  # collected first, not frozen for good
    assert gc.get_freeze_count() > 0
    assert not walked_by_collections(startup)  # out of every later collection's walk


@pytest.mark.usefixtures("unfrozen")
def test_objects_made_later_are_collected_as_before() -> None:
    threshold = gc.get_threshold()
    freeze_startup_heap()
    frozen = gc.get_freeze_count()

    later = Node()
    later_garbage = garbage_cycle()
    assert walked_by_collections(later)
    gc.collect()
    assert later_garbage() is None
    assert gc.get_freeze_count() == frozen  # a collection freezes nothing more
    assert gc.isenabled()
    assert gc.get_threshold() == threshold  # the collector keeps its settings
