"""The HTTP endpoints of the operations that control runs and jobs (API.md Part 2,
"Controlling runs and jobs"): the jobs, promote, delete and the bulk operations; and flows
("Flows"). `web/app.py` registers them with the rest, one per row of `api/operations.py`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request

from ..api import wire
from ..core.jobs import Jobs
from ..core.models import JobInfo

# An operation's endpoint: the wire body of its answer, or a Response of its own.
OperationEndpoint = Callable[[Request], Awaitable[Any]]
Register = Callable[[str], Callable[[OperationEndpoint], OperationEndpoint]]


def register_control(
    operation: Register,
    jobs: Callable[[Request], Jobs],
    read_json: Callable[[Request], Awaitable[Any]],
    not_found: Callable[[str], Exception],
) -> None:
    def job_found(job: JobInfo | None) -> Any:
        if job is None:
            raise not_found("job")
        return wire.job_to_wire(job)

    @operation("create_flow")
    async def create_flow(request: Request) -> Any:
        parent, children = wire.flow_request(await read_json(request))
        return wire.flow_to_wire(await jobs(request).create_flow(parent, children))

    @operation("list_jobs")
    async def list_jobs(request: Request) -> Any:
        return {"items": [wire.job_to_wire(job) for job in await jobs(request).list_jobs()]}

    @operation("get_job")
    async def get_job(request: Request) -> Any:
        return job_found(await jobs(request).get_job(request.path_params["name"]))

    @operation("pause_job")
    async def pause_job(request: Request) -> Any:
        return job_found(await jobs(request).pause_job(request.path_params["name"]))

    @operation("resume_job")
    async def resume_job(request: Request) -> Any:
        return job_found(await jobs(request).resume_job(request.path_params["name"]))

    @operation("promote")
    async def promote_run(request: Request) -> Any:
        run = await jobs(request).promote(request.path_params["run_id"])
        if run is None:
            raise not_found("run")
        return wire.run_to_wire(run)

    @operation("delete")
    async def delete_run(request: Request) -> Any:
        if not await jobs(request).delete(request.path_params["run_id"]):
            raise not_found("run")

    @operation("cancel_many")
    async def cancel_runs(request: Request) -> Any:
        fields = wire.bulk_filter(await read_json(request))
        return wire.bulk_to_wire(await jobs(request).cancel_many(**fields))

    @operation("retry_many")
    async def retry_runs(request: Request) -> Any:
        fields = wire.bulk_filter(await read_json(request))
        return wire.bulk_to_wire(await jobs(request).retry_many(**fields))

    @operation("delete_many")
    async def delete_runs(request: Request) -> Any:
        fields = wire.bulk_filter(await read_json(request))
        return wire.bulk_to_wire(await jobs(request).delete_many(**fields))
