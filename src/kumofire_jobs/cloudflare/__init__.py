"""The Cloudflare edge: the binding protocols over a Python Worker's bindings, the Worker glue,
the `JobsService` RPC functions, the client of that service and the remote handlers.

- `ffi`, `errors`: JS values to Python and back; platform errors.
- `d1`, `queue`, `durable_objects`: the adapters (`resources_from_env(env)` builds them).
- `worker`: what `src/entry.py`'s handlers do (`WorkerApp`); `service`: the RPC entrypoint's
  functions, and `entrypoint`: the entrypoint's methods built from them; `client`:
  `JobsClient` over a `JobsService` binding; `remote`: remote handlers.

Every module here imports on any Python (it reaches `js`/`pyodide` only at call time, under
Pyodide) and none of them imports the local bindings or `sqlite3`. This `__init__` imports
nothing eagerly, so `import kumofire_jobs.cloudflare.client` (what a calling Worker does) loads
neither the Worker glue nor the HTTP layer; the names below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..core.log import configure_worker_logging
    from .d1 import CloudflareD1Database, D1RetryPolicy, is_transient_d1_error
    from .durable_objects import (
        CloudflareActorStorage,
        CloudflareDurableObjectNamespace,
        CloudflareDurableObjectStub,
    )
    from .errors import CloudflareError, D1Error, D1TypeError, DurableObjectError, QueueError
    from .queue import (
        CloudflareMessageBatch,
        CloudflareQueue,
        CloudflareQueueMessage,
        adapt_batch,
    )
    from .service import JobsRpcError
    from .worker import API_TOKEN_VAR, WorkerApp, env_var, resources_from_env

# name -> the module that defines it, imported on first access (PEP 562).
_EXPORTS: dict[str, str] = {
    "configure_worker_logging": "kumofire_jobs.core.log",
    "CloudflareD1Database": "kumofire_jobs.cloudflare.d1",
    "D1RetryPolicy": "kumofire_jobs.cloudflare.d1",
    "is_transient_d1_error": "kumofire_jobs.cloudflare.d1",
    "CloudflareActorStorage": "kumofire_jobs.cloudflare.durable_objects",
    "CloudflareDurableObjectNamespace": "kumofire_jobs.cloudflare.durable_objects",
    "CloudflareDurableObjectStub": "kumofire_jobs.cloudflare.durable_objects",
    "CloudflareError": "kumofire_jobs.cloudflare.errors",
    "D1Error": "kumofire_jobs.cloudflare.errors",
    "D1TypeError": "kumofire_jobs.cloudflare.errors",
    "DurableObjectError": "kumofire_jobs.cloudflare.errors",
    "QueueError": "kumofire_jobs.cloudflare.errors",
    "CloudflareMessageBatch": "kumofire_jobs.cloudflare.queue",
    "CloudflareQueue": "kumofire_jobs.cloudflare.queue",
    "CloudflareQueueMessage": "kumofire_jobs.cloudflare.queue",
    "adapt_batch": "kumofire_jobs.cloudflare.queue",
    "JobsRpcError": "kumofire_jobs.cloudflare.service",
    "API_TOKEN_VAR": "kumofire_jobs.cloudflare.worker",
    "WorkerApp": "kumofire_jobs.cloudflare.worker",
    "env_var": "kumofire_jobs.cloudflare.worker",
    "resources_from_env": "kumofire_jobs.cloudflare.worker",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "API_TOKEN_VAR",
    "CloudflareActorStorage",
    "CloudflareD1Database",
    "CloudflareDurableObjectNamespace",
    "CloudflareDurableObjectStub",
    "CloudflareError",
    "CloudflareMessageBatch",
    "CloudflareQueue",
    "CloudflareQueueMessage",
    "D1Error",
    "D1RetryPolicy",
    "D1TypeError",
    "DurableObjectError",
    "JobsRpcError",
    "QueueError",
    "WorkerApp",
    "adapt_batch",
    "configure_worker_logging",
    "env_var",
    "is_transient_d1_error",
    "resources_from_env",
]
