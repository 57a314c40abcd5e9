"""The HTTP endpoints of schedules (API.md Part 2, "Schedules"): create, list, upsert, and
get, update, disable, enable and delete by id or by key. `web/app.py` registers them with the
rest, one per row of `api/operations.py`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request

from ..api import operations, wire
from ..core.jobs import Jobs
from ..core.models import JobSchedule
from .control import Register
from .query import query_bool, query_limit, query_str
from .responses import JSONResponse


def register_schedules(
    operation: Register,
    jobs: Callable[[Request], Jobs],
    read_json: Callable[[Request], Awaitable[Any]],
    not_found: Callable[[str], Exception],
) -> None:
    def found(schedule: JobSchedule | None) -> Any:
        if schedule is None:
            raise not_found("schedule")
        return wire.schedule_to_wire(schedule)

    def deleted(done: bool) -> None:
        if not done:
            raise not_found("schedule")

    async def schedule_body(request: Request) -> dict[str, Any]:
        return wire.schedule_fields(await read_json(request), operations.SCHEDULE_PATCH_FIELDS)

    @operation("create_schedule")
    async def create_schedule(request: Request) -> Any:
        fields = wire.schedule_fields(await read_json(request), operations.SCHEDULE_CREATE_FIELDS)
        if "enabled" in fields and fields["enabled"] is None:
            del fields["enabled"]
        name = fields.pop("name", None)
        return found(await jobs(request).create_schedule(name, **fields))

    @operation("list_schedules")
    async def list_schedules(request: Request) -> Any:
        page = await jobs(request).list_schedules(
            enabled=query_bool(request, "enabled"),
            name=query_str(request, "name"),
            limit=query_limit(request),
            cursor=query_str(request, "cursor"),
        )
        return wire.schedule_page_to_wire(page)

    @operation("upsert_schedule")
    async def upsert_schedule(request: Request) -> Any:
        fields = await schedule_body(request)
        name = fields.pop("name", None)
        schedule, created = await jobs(request)._upsert_schedule_created(
            request.path_params["key"], name, **fields
        )
        return JSONResponse(wire.schedule_to_wire(schedule), status_code=201 if created else 200)

    @operation("get_schedule")
    async def get_schedule(request: Request) -> Any:
        return found(await jobs(request).get_schedule(request.path_params["schedule_id"]))

    @operation("get_schedule_by_key")
    async def get_schedule_by_key(request: Request) -> Any:
        return found(await jobs(request).get_schedule_by_key(request.path_params["key"]))

    @operation("update_schedule")
    async def update_schedule(request: Request) -> Any:
        fields = await schedule_body(request)
        bound = jobs(request)
        return found(await bound.update_schedule(request.path_params["schedule_id"], **fields))

    @operation("update_schedule_by_key")
    async def update_schedule_by_key(request: Request) -> Any:
        fields = await schedule_body(request)
        bound = jobs(request)
        return found(await bound.update_schedule_by_key(request.path_params["key"], **fields))

    @operation("disable_schedule")
    async def disable_schedule(request: Request) -> Any:
        return found(await jobs(request).disable_schedule(request.path_params["schedule_id"]))

    @operation("disable_schedule_by_key")
    async def disable_schedule_by_key(request: Request) -> Any:
        return found(await jobs(request).disable_schedule_by_key(request.path_params["key"]))

    @operation("enable_schedule")
    async def enable_schedule(request: Request) -> Any:
        return found(await jobs(request).enable_schedule(request.path_params["schedule_id"]))

    @operation("enable_schedule_by_key")
    async def enable_schedule_by_key(request: Request) -> Any:
        return found(await jobs(request).enable_schedule_by_key(request.path_params["key"]))

    @operation("delete_schedule")
    async def delete_schedule(request: Request) -> Any:
        deleted(await jobs(request).delete_schedule(request.path_params["schedule_id"]))

    @operation("delete_schedule_by_key")
    async def delete_schedule_by_key(request: Request) -> Any:
        deleted(await jobs(request).delete_schedule_by_key(request.path_params["key"]))
