"""The Cloudflare adapter: the binding protocols over a Python Worker's bindings.

`resources_from_env(env)` adapts this project's D1 database, Queue producer and coordinator
namespace; `WorkerApp` holds what `src/entry.py`'s handlers do. Every module here imports on
any Python (it reaches `js`/`pyodide` only at call time, under Pyodide) and none of them
imports the local bindings or `sqlite3`.
"""

from ..log import configure_worker_logging
from .d1 import CloudflareD1Database, D1RetryPolicy, is_transient_d1_error
from .durable_objects import (
    CloudflareActorStorage,
    CloudflareDurableObjectNamespace,
    CloudflareDurableObjectStub,
)
from .errors import CloudflareError, D1Error, D1TypeError, DurableObjectError, QueueError
from .queue import CloudflareMessageBatch, CloudflareQueue, CloudflareQueueMessage, adapt_batch
from .service import JobsRpcError
from .worker import API_TOKEN_VAR, WorkerApp, env_var, resources_from_env

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
