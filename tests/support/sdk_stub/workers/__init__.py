"""A stand-in for the Workers SDK's `workers` package where it cannot import (it needs
Pyodide's `js` module): the entrypoint base classes, as the SDK's take `(ctx, env)`, without
the SDK's wrapping of `ctx` and `env` (the tests hand in SDK-shaped objects themselves)."""

from typing import Any


class WorkerEntrypoint:
    def __init__(self, ctx: Any, env: Any) -> None:
        self.ctx = ctx
        self.env = env


class DurableObject:
    def __init__(self, ctx: Any, env: Any) -> None:
        self.ctx = ctx
        self.env = env
