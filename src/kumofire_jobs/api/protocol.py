"""`JobsApi`: the jobs API's calls, declared once, as Oban's `engine.ex` declares its callbacks.

Every implementation says it implements it and mypy checks its signatures: `JobsClient`
(over a service binding) subclasses it, and `Jobs` (the bound runtime, in the core, which
cannot import this layer) is checked by `_jobs_implements` below; the HTTP client of the next
issue subclasses it too. `operations.OPERATIONS` gives each of these methods its wire form
(the RPC arguments, the HTTP route, the status codes), and `tests/test_operations.py` fails
when a surface lacks one or disagrees on a field.

Adding an operation: a method here, a row in `operations.OPERATIONS`, then its implementation
in `Jobs`, `JobsClient`, `cloudflare/service.py` (the RPC function) and `web/app.py` (the
endpoint); the entrypoint's method, the route and the OpenAPI path follow from the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from ..core.models import (
    BulkResult,
    CreatedFlow,
    CreatedRun,
    CreateRequest,
    JobInfo,
    JobRun,
    JobSchedule,
    LogLine,
    Page,
    RunAttempt,
)
from ..core.states import RunStatus

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..core.jobs import Jobs
    from ..core.models import SchedulePatch


class JobsApi(Protocol):
    """The jobs API every surface offers (API.md, "Jobs" and "Schedules")."""

    # --- runs -------------------------------------------------------------------------------

    async def create(
        self,
        name: str,
        payload: Any = None,
        *,
        run_at: datetime | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        dedupe_key: str | None = None,
        priority: int | None = None,
        concurrency_key: str | None = None,
        dedupe_ttl: float | None = None,
    ) -> CreatedRun: ...

    async def create_many(self, requests: Sequence[CreateRequest]) -> list[CreatedRun]: ...

    async def create_flow(
        self, parent: CreateRequest, children: Sequence[CreateRequest]
    ) -> CreatedFlow: ...

    async def get(self, run_id: str) -> JobRun | None: ...

    async def attempts(self, run_id: str) -> list[RunAttempt] | None: ...

    async def logs(self, run_id: str) -> list[LogLine] | None: ...

    async def list_jobs(self) -> list[JobInfo]: ...

    async def get_job(self, name: str) -> JobInfo | None: ...

    async def pause_job(self, name: str) -> JobInfo | None: ...

    async def resume_job(self, name: str) -> JobInfo | None: ...

    async def list(
        self,
        *,
        status: RunStatus | str | None = None,
        name: str | None = None,
        schedule_id: str | None = None,
        parent_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[JobRun]: ...

    async def counts(self, *, name: str | None = None) -> dict[str, int]: ...

    async def cancel(self, run_id: str) -> JobRun | None: ...

    async def retry(self, run_id: str) -> JobRun | None: ...

    async def promote(self, run_id: str) -> JobRun | None: ...

    async def delete(self, run_id: str) -> bool: ...

    async def cancel_many(
        self,
        *,
        status: RunStatus | str | None = None,
        name: str | None = None,
        schedule_id: str | None = None,
        created_before: datetime | None = None,
        limit: int = 1000,
    ) -> BulkResult: ...

    async def retry_many(
        self,
        *,
        status: RunStatus | str | None = None,
        name: str | None = None,
        schedule_id: str | None = None,
        created_before: datetime | None = None,
        limit: int = 1000,
    ) -> BulkResult: ...

    async def delete_many(
        self,
        *,
        status: RunStatus | str | None = None,
        name: str | None = None,
        schedule_id: str | None = None,
        created_before: datetime | None = None,
        limit: int = 1000,
    ) -> BulkResult: ...

    # --- schedules --------------------------------------------------------------------------

    async def create_schedule(
        self,
        name: str,
        payload: Any = None,
        *,
        cron: str | None = None,
        every: float | None = None,
        key: str | None = None,
        timezone: str | None = None,
        enabled: bool = True,
        max_attempts: int | None = None,
        priority: int | None = None,
        concurrency_key: str | None = None,
        limit: int | None = None,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
    ) -> JobSchedule: ...

    async def upsert_schedule(
        self,
        key: str,
        name: str,
        payload: Any = None,
        *,
        cron: str | None = None,
        every: float | None = None,
        timezone: str | None = None,
        enabled: bool | None = None,
        max_attempts: int | None = None,
        priority: int | None = None,
        concurrency_key: str | None = None,
        limit: int | None = None,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
    ) -> JobSchedule: ...

    async def get_schedule(self, schedule_id: str) -> JobSchedule | None: ...

    async def get_schedule_by_key(self, key: str) -> JobSchedule | None: ...

    async def update_schedule(
        self, schedule_id: str, **patch: Unpack[SchedulePatch]
    ) -> JobSchedule | None: ...

    async def update_schedule_by_key(
        self, key: str, **patch: Unpack[SchedulePatch]
    ) -> JobSchedule | None: ...

    async def disable_schedule(self, schedule_id: str) -> JobSchedule | None: ...

    async def disable_schedule_by_key(self, key: str) -> JobSchedule | None: ...

    async def enable_schedule(self, schedule_id: str) -> JobSchedule | None: ...

    async def enable_schedule_by_key(self, key: str) -> JobSchedule | None: ...

    async def delete_schedule(self, schedule_id: str) -> bool: ...

    async def delete_schedule_by_key(self, key: str) -> bool: ...

    async def list_schedules(
        self,
        *,
        enabled: bool | None = None,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[JobSchedule]: ...


def _jobs_implements(jobs: Jobs) -> JobsApi:
    """mypy's check that the bound runtime's `Jobs` implements `JobsApi` (the core sits below
    this layer, so `Jobs` cannot name the protocol itself)."""
    return jobs
