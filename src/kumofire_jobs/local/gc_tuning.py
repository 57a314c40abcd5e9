"""The garbage collector of a long-running embedded runtime (`kumofire-jobs dev`, benchmarks).

CPython's cyclic collector stops the event loop while it runs, and a full collection walks
every object it tracks: once a running system's modules, caches and bindings are loaded that
takes 10-60 ms here, a pause that lands on whatever run is starting then. Whatever is alive
once the system has started lives as long as the process, so `freeze_startup_heap()` moves
it out of the collector's sight (`gc.freeze()`): later collections walk only what came after.
Memory is freed by reference counting as before; only cycles among the frozen objects would
never be collected, and those objects live for good anyway.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Call once the runtime has started (bindings open, first requests not yet served)."""
    gc.collect()
    gc.freeze()
