"""What a Worker's handlers do, bound to one runtime: `src/entry.py` delegates every call here.

```python
runtime = create_runtime(handlers)
app = WorkerApp(runtime)

class Default(WorkerEntrypoint):
    async def queue(self, batch, env=None, ctx=None):
        await app.queue(batch, self.env)
```

The bindings of an isolate's `env` are the same objects for as long as the isolate lives, so
the adapted `Resources` are built on first use and kept: the runtime then keeps one bound
store (and one schema check) per isolate, not one per request.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Awaitable, Callable
from typing import Any, Final

from kumofire_coordinator import CoordinatorActor, LimiterActor

from ..core.context import Handler
from ..core.jobs import Jobs
from ..core.log import configure_worker_logging as configure_worker_logging  # for src/entry.py
from ..core.models import ConsumeResult, DispatchResult
from ..core.runtime import COORDINATOR_BINDING, DB_BINDING, QUEUE_BINDING, Resources, Runtime
from ..web import create_app
from .d1 import CloudflareD1Database, D1RetryPolicy
from .durable_objects import CloudflareActorStorage, CloudflareDurableObjectNamespace
from .ffi import to_js, to_py
from .queue import CloudflareQueue, adapt_batch
from .remote import REMOTE_HANDLERS_VAR, parse_routes, remote_handlers

API_TOKEN_VAR: Final = "KUMOFIRE_API_TOKEN"

AsgiFetch = Callable[[Any, Any, Any, Any], Awaitable[Any]]


def resources_from_env(env: Any, *, d1_retry: D1RetryPolicy | None = None) -> Resources:
    """This project's bindings (`JOBS_DB`, `JOBS_QUEUE`, `JOB_COORDINATOR`), adapted, and the
    remote handlers that `KUMOFIRE_REMOTE_HANDLERS` routes to other Workers."""
    return Resources(
        db=CloudflareD1Database(getattr(env, DB_BINDING), retry=d1_retry),
        queue=CloudflareQueue(getattr(env, QUEUE_BINDING)),
        coordinator=CloudflareDurableObjectNamespace(getattr(env, COORDINATOR_BINDING)),
        remote_handlers=remote_handlers_from_env(env),
    )


def remote_handlers_from_env(env: Any) -> dict[str, Handler]:
    """The handlers of the `KUMOFIRE_REMOTE_HANDLERS` routes (a JSON var: a JavaScript object,
    or its text), each calling its service binding with the run as a JavaScript object."""
    routes = parse_routes(to_py(getattr(env, REMOTE_HANDLERS_VAR, None)))
    return remote_handlers(
        routes,
        env,
        outgoing=to_js,
        incoming=to_py,
        hint="add it to wrangler.toml: [[services]] binding = ..., service = <the Worker>, "
        "entrypoint = <its WorkerEntrypoint class>",
    )


def env_var(env: Any, name: str) -> str | None:
    """A Worker variable or secret (a text binding on `env`), else the process environment;
    an empty value counts as unset."""
    value = getattr(env, name, None)
    if not isinstance(value, str):
        value = os.environ.get(name)
    return value or None


async def sdk_asgi_fetch(app: Any, request: Any, env: Any, ctx: Any) -> Any:
    """The Workers SDK's ASGI bridge (`workers.asgi.fetch`), imported on first use."""
    asgi = importlib.import_module("workers.asgi")
    return await asgi.fetch(app, request, env, ctx)


class WorkerApp:
    def __init__(
        self,
        runtime: Runtime,
        *,
        api_token_var: str = API_TOKEN_VAR,
        d1_retry: D1RetryPolicy | None = None,
        asgi_fetch: AsgiFetch | None = None,
    ) -> None:
        self.runtime = runtime
        self.api_token_var = api_token_var
        self.d1_retry = d1_retry
        self._asgi_fetch = asgi_fetch or sdk_asgi_fetch
        self._resources: Resources | None = None
        self._http: tuple[str | None, Any] | None = None

    def resources(self, env: Any) -> Resources:
        if self._resources is None:
            resources = resources_from_env(env, d1_retry=self.d1_retry)
            self.runtime.handlers_with(resources.remote_handlers)  # a job routed twice raises
            self._resources = resources
        return self._resources

    def jobs(self, env: Any) -> Jobs:
        return self.runtime.bind(self.resources(env))

    # --- the handlers -----------------------------------------------------------------------

    async def fetch(self, request: Any, env: Any, ctx: Any = None) -> Any:
        """The HTTP API through the SDK's ASGI bridge. A production Worker requires a token:
        without `KUMOFIRE_API_TOKEN` the API answers 403 `api_disabled`."""
        return await self._asgi_fetch(self.http_app(env), request, env, ctx)

    async def scheduled(self, controller: Any, env: Any) -> DispatchResult:
        """The cron trigger: reconciliation and retention (which log what they repair)."""
        return await self.runtime.dispatch_scheduled(self.resources(env))

    async def queue(self, batch: Any, env: Any) -> list[ConsumeResult]:
        return await self.runtime.consume_batch(adapt_batch(batch), self.resources(env))

    def coordinator_actor(self, ctx: Any, env: Any) -> CoordinatorActor:
        """The actor of a coordinator Durable Object, over its `ctx.storage`."""
        return self.runtime.coordinator_actor(
            CloudflareActorStorage(ctx.storage), self.resources(env)
        )

    def limiter_actor(self, ctx: Any, env: Any) -> LimiterActor:
        """The limiter the same Durable Object class serves (named `limiter:<job>`)."""
        return self.runtime.limiter_actor(CloudflareActorStorage(ctx.storage), self.resources(env))

    def http_app(self, env: Any) -> Any:
        """The Starlette app, built once per token value (the token is read from `env`)."""
        token = env_var(env, self.api_token_var)
        if self._http is None or self._http[0] != token:

            def jobs(request: Any) -> Jobs:
                return self.jobs(request.scope.get("env", env))

            self._http = (token, create_app(jobs, api_token=token, require_token=True))
        return self._http[1]
