"""A stand-in for the Workers SDK's `workers` module, for Worker code that `kumofire-jobs dev
--service` runs in-process: the SDK imports Pyodide's `js` and cannot load off Pyodide.

It has the two base classes a target Worker subclasses, which workerd builds as
`Class(ctx, env)`. Anything else the SDK offers (`Response`, `fetch`, ...) is missing here: a
target that imports it fails with an ImportError naming it.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

__all__ = ["DurableObject", "WorkerEntrypoint", "install"]


class WorkerEntrypoint:
    def __init__(self, ctx: Any, env: Any) -> None:
        self.ctx = ctx
        self.env = env


class DurableObject:
    def __init__(self, ctx: Any, env: Any) -> None:
        self.ctx = ctx
        self.env = env


def install() -> None:
    """Make `import workers` give this module, unless the real SDK can load (under Pyodide)
    or something already answers to the name."""
    if "workers" in sys.modules or importlib.util.find_spec("js") is not None:
        return
    sys.modules["workers"] = sys.modules[__name__]
