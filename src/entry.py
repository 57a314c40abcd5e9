"""The Kumofire Jobs Worker: HTTP API, cron reconciliation, queue consumer, the `JobsService`
RPC entrypoint and the coordinator Durable Object class (see wrangler.toml).

A thin shim: every handler delegates to `kumofire_jobs.cloudflare` (`WorkerApp` and the RPC
functions of `kumofire_jobs.cloudflare.service`), which run and are tested on any Python.
"""

from workers import DurableObject, WorkerEntrypoint

from kumofire_coordinator import CoordinatorEndpoint
from kumofire_jobs import JobContext, create_runtime
from kumofire_jobs.cloudflare import WorkerApp, service

# --- Your job handlers ------------------------------------------------------------------------
# A handler is an async function taking a `JobContext` (`ctx.job.payload`, `ctx.job.attempt`,
# `await ctx.heartbeat()` in long loops); raise to fail the attempt (retried by the runtime's
# RetryPolicy) or `NonRetryableError` to fail the run at once. Register each under the job name
# that `create` is called with. In a larger project keep them in your own modules under src/
# and import them here; `create_runtime` also takes `retry=RetryPolicy(...)`,
# `lease_seconds=...` and `retention_seconds=...`.


async def echo(ctx: JobContext) -> None:
    """An example job: logs its payload."""
    ctx.log.info("echo", payload=ctx.job.payload)


handlers = {"echo": echo}

runtime = create_runtime(handlers)
app = WorkerApp(runtime)


class Default(WorkerEntrypoint):
    """The Worker's HTTP API (bearer token: the `KUMOFIRE_API_TOKEN` secret), cron trigger
    and queue consumer."""

    async def fetch(self, request):
        return await app.fetch(request, self.env, self.ctx)

    async def scheduled(self, controller, env=None, ctx=None):
        await app.scheduled(controller, self.env)

    async def queue(self, batch, env=None, ctx=None):
        await app.queue(batch, self.env)


class JobsService(WorkerEntrypoint):
    """The RPC entrypoint other Workers bind with `entrypoint = "JobsService"`: positional
    arguments, plain dicts back, errors whose message starts with the error code."""

    async def create(self, body):
        return await service.create(app.jobs(self.env), body)

    async def create_many(self, bodies):
        return await service.create_many(app.jobs(self.env), bodies)

    async def get(self, id):
        return await service.get(app.jobs(self.env), id)

    async def list(self, query=None):
        return await service.list_runs(app.jobs(self.env), query)

    async def counts(self, query=None):
        return await service.counts(app.jobs(self.env), query)

    async def cancel(self, id):
        return await service.cancel(app.jobs(self.env), id)

    async def retry(self, id):
        return await service.retry(app.jobs(self.env), id)


class JobCoordinator(DurableObject, CoordinatorEndpoint):
    """The per-run coordinator (a SQLite-backed Durable Object): its RPC methods and alarm
    come from `CoordinatorEndpoint`, over the actor built on this object's storage."""

    def __init__(self, ctx, env):
        super().__init__(ctx, env)
        self.actor = app.coordinator_actor(self.ctx, self.env)
