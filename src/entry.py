"""The Kumofire Jobs Worker: HTTP API, cron reconciliation, queue consumer, the `JobsService`
RPC entrypoint and the coordinator Durable Object class (see wrangler.toml).

A thin shim: every handler delegates to `kumofire_jobs.cloudflare` (`WorkerApp` and the RPC
functions of `kumofire_jobs.cloudflare.service`, made the entrypoint's methods by
`kumofire_jobs.cloudflare.entrypoint`), which run and are tested on any Python.
"""

from typing import Any

import msgspec
from workers import DurableObject, WorkerEntrypoint

from kumofire_coordinator import CoordinatorEndpoint
from kumofire_jobs import JobContext, create_runtime
from kumofire_jobs.cloudflare.entrypoint import rpc_entrypoint
from kumofire_jobs.cloudflare.worker import WorkerApp, configure_worker_logging

# One JSON object per line on standard output, which Workers Logs indexes field by field.
configure_worker_logging()

# --- Your job handlers ------------------------------------------------------------------------
# A handler is an async function taking a `JobContext` (`ctx.job.payload`, `ctx.job.attempt`,
# `await ctx.heartbeat()` in long loops); raise to fail the attempt (retried by the runtime's
# RetryPolicy) or `NonRetryableError` to fail the run at once. Register each under the job name
# that `create` is called with. In a larger project keep them in your own modules under src/
# and import them here; `create_runtime` also takes `retry=RetryPolicy(...)`,
# `lease_seconds=...` and `retention_seconds=...`. A job whose handler lives in another Worker
# is not registered here: `KUMOFIRE_REMOTE_HANDLERS` in wrangler.toml routes it there.


async def echo(ctx: JobContext) -> None:
    """An example job: logs the size of its payload (log sizes, not contents: a payload may
    be up to 740,000 bytes). The line is also kept with the run (`GET /v1/runs/{id}/logs`)."""
    ctx.log.info("echo", payload_bytes=len(msgspec.json.encode(ctx.job.payload)))


handlers = {"echo": echo}

runtime = create_runtime(handlers)
app = WorkerApp(runtime)


class Default(WorkerEntrypoint):
    """The Worker's HTTP API (bearer token: the `KUMOFIRE_API_TOKEN` secret), cron trigger
    and queue consumer."""

    async def fetch(self, request: Any) -> Any:
        return await app.fetch(request, self.env, self.ctx)

    async def scheduled(self, controller: Any, env: Any = None, ctx: Any = None) -> None:
        await app.scheduled(controller, self.env)

    async def queue(self, batch: Any, env: Any = None, ctx: Any = None) -> None:
        await app.queue(batch, self.env)


@rpc_entrypoint(lambda entrypoint: app.jobs(entrypoint.env))
class JobsService(WorkerEntrypoint):
    """The RPC entrypoint other Workers bind with `entrypoint = "JobsService"`: positional
    arguments, plain dicts back; an error is answered, not thrown: a JavaScript `Error` whose
    message starts with the error code (`"not_found: run not found"`, also its `code`). A
    Python caller wraps its binding in `kumofire_jobs.client.JobsClient` for the typed API.
    Its methods, one per operation of `kumofire_jobs.api.operations` (`create(body)`,
    `get(id)`, `list(query=None)`, ...), are added by `rpc_entrypoint`."""


class JobCoordinator(DurableObject, CoordinatorEndpoint):
    """The per-run coordinator (a SQLite-backed Durable Object): its RPC methods and alarm
    come from `CoordinatorEndpoint`, over the actor built on this object's storage."""

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.actor = app.coordinator_actor(self.ctx, self.env)
        self.limiter = app.limiter_actor(self.ctx, self.env)
