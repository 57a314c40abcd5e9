"""The jobs API's operations, one row each: the wire side of `protocol.JobsApi`.

A row names a `JobsApi` method (which is also the `JobsService` RPC method) and says how it
crosses a boundary: its RPC arguments (positional: an id or key, then one dict shaped like the
HTTP body or query), its HTTP route, the statuses it answers, the fields of its body or query
and the wire shape of its answer (a schema of the OpenAPI document). From this table
`cloudflare/service.py` builds the entrypoint's methods (`rpc_entrypoint`), `web/app.py` the
routes and `web/openapi.py` the paths; `tests/test_operations.py` checks `JobsApi`, `Jobs`,
`JobsClient`, `JobsService`, the routes and the document against it.

The field sets are declared here once (the schedule patch once, as `core.models.SchedulePatch`,
since the core reads it too) and used by the codec, the RPC functions and the document.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ..core.models import CreateRequest, SchedulePatch

# --- Field sets -----------------------------------------------------------------------------------

CREATE_FIELDS: Final = frozenset(CreateRequest.__struct_fields__)
"""A run's create body: `create`'s arguments, each item of `create_many`."""
BATCH_FIELDS: Final = frozenset({"runs"})
"""`POST /v1/runs:batch`: `{"runs": [create body, ...]}`."""
SCHEDULE_PATCH_FIELDS: Final = frozenset(SchedulePatch.__optional_keys__)
"""What `update_schedule*` change and `upsert_schedule` takes besides the key."""
SCHEDULE_CREATE_FIELDS: Final = SCHEDULE_PATCH_FIELDS | {"key"}
"""`create_schedule`'s arguments."""
FLOW_FIELDS: Final = frozenset({"parent", "children"})
"""`POST /v1/flows`: `{"parent": create body, "children": [create body, ...]}`."""
RUN_QUERY: Final = ("status", "name", "schedule_id", "parent_id", "limit", "cursor")
"""`list`'s keyword arguments: the HTTP query string, the RPC query dict."""
COUNTS_QUERY: Final = ("name",)
BULK_FIELDS: Final = frozenset({"status", "name", "schedule_id", "created_before", "limit"})
"""A bulk operation's filter: `cancel_many`, `retry_many`, `delete_many`."""
SCHEDULE_QUERY: Final = ("enabled", "name", "limit", "cursor")


@dataclass(frozen=True)
class Body:
    """A request body: a JSON object of exactly these fields (unknown ones are refused)."""

    schema: str  # its name among the OpenAPI document's schemas
    fields: frozenset[str]
    description: str
    required: tuple[str, ...] = ()


CREATE_RUN: Final = Body("CreateRun", CREATE_FIELDS, "the run", required=("name",))
CREATE_RUNS: Final = Body("CreateRuns", BATCH_FIELDS, "the runs", required=("runs",))
CREATE_FLOW: Final = Body(
    "CreateFlow", FLOW_FIELDS, "the parent and its children", required=("parent", "children")
)
CREATE_SCHEDULE: Final = Body(
    "CreateSchedule", SCHEDULE_CREATE_FIELDS, "the schedule", required=("name",)
)
# PUT and PATCH: the fields to change (the key or id is in the path). A PUT that creates needs
# `name` and a timing, as a create does.
SCHEDULE_FIELDS: Final = Body("ScheduleFields", SCHEDULE_PATCH_FIELDS, "the fields")
RUN_FILTER: Final = Body(
    "RunFilter", BULK_FIELDS,
    "which runs (at least one of status, name, schedule_id, created_before)",
)  # fmt: skip


@dataclass(frozen=True)
class Operation:
    name: str
    """The `JobsApi` method and the `JobsService` RPC method."""
    rpc: tuple[str, ...]
    """The RPC method's positional arguments; a trailing `query` is optional."""
    method: str
    path: str
    """The HTTP route; its `{parameter}` is the Python method's first argument."""
    ok: Mapping[int, str]
    """The success statuses, the first the usual one, each with what it means."""
    errors: tuple[int, ...]
    """The error statuses besides the token's (401, 403) that it answers."""
    result: str | None
    """The answer's schema in the OpenAPI document; None: no body (204)."""
    summary: str
    body: Body | None = None
    query: tuple[str, ...] = ()
    """Its query fields (the HTTP query string, the RPC query dict): the Python keywords."""

    @property
    def status(self) -> int:
        """The usual success status (the first of `ok`)."""
        return next(iter(self.ok))

    @property
    def path_parameters(self) -> tuple[str, ...]:
        return tuple(part[1:-1] for part in self.path.split("/") if part.startswith("{"))


_RUN = {200: "the run"}
_SCHEDULE = {200: "the schedule"}
_ENABLE = (
    "Enable (materializes the next occurrence); 409 when it would have none: its limit used up "
    "or no occurrence before its end_at"
)
_BODY_ERRORS = (400, 413, 415, 422)
_JOB = {200: "the job"}
_BULK = {200: "how many runs changed, and whether more match"}

OPERATIONS: Final[tuple[Operation, ...]] = (
    # --- runs ---------------------------------------------------------------------------------
    Operation(
        "create", ("body",), "POST", "/v1/runs",
        {202: "created, or an existing run by dedupe_key"}, _BODY_ERRORS, "CreatedRun",
        "Create a run", body=CREATE_RUN,
    ),
    Operation(
        "create_many", ("bodies",), "POST", "/v1/runs:batch",
        {202: "one result per run, in order"}, _BODY_ERRORS, "CreatedRuns",
        "Create up to 100 runs in one call", body=CREATE_RUNS,
    ),
    Operation(
        "create_flow", ("body",), "POST", "/v1/flows",
        {202: "the parent (waiting for its children) and the children, created"},
        _BODY_ERRORS, "CreatedFlow",
        "Create a parent run that waits until each of its 1 to 100 children has finished",
        body=CREATE_FLOW,
    ),
    Operation("get", ("id",), "GET", "/v1/runs/{run_id}", _RUN, (404,), "JobRun", "Get a run"),
    Operation(
        "attempts", ("id",), "GET", "/v1/runs/{run_id}/attempts",
        {200: "the run's finished attempts, oldest first"}, (404,), "AttemptList",
        "A run's attempts: when each started and finished, its outcome and error",
    ),
    Operation(
        "logs", ("id",), "GET", "/v1/runs/{run_id}/logs",
        {200: "the run's log lines, oldest first"}, (404,), "LogList",
        "What a run's handler logged (ctx.log, info and above; the last 200 lines, 64 KiB)",
    ),
    Operation(
        "list", ("query",), "GET", "/v1/runs", {200: "a page"}, (422,), "RunPage",
        "List runs, newest first", query=RUN_QUERY,
    ),
    Operation(
        "counts", ("query",), "GET", "/v1/runs:counts", {200: "the counts"}, (422,), "Counts",
        "Run counts by status (every status, zeros included)", query=COUNTS_QUERY,
    ),
    Operation(
        "promote", ("id",), "POST", "/v1/runs/{run_id}/promote", _RUN, (404, 409), "JobRun",
        "Make a scheduled run due now",
    ),
    Operation(
        "cancel", ("id",), "POST", "/v1/runs/{run_id}/cancel", _RUN, (404,), "JobRun",
        "Cancel a scheduled, queued or running run (a finished one is unchanged)",
    ),
    Operation(
        "retry", ("id",), "POST", "/v1/runs/{run_id}/retry", _RUN, (404, 409), "JobRun",
        "Schedule a failed or canceled run again now, with one more attempt",
    ),
    Operation(
        "cancel_many", ("body",), "POST", "/v1/runs:cancel", _BULK, _BODY_ERRORS, "BulkResult",
        "Cancel the unfinished runs that match (at most limit)", body=RUN_FILTER,
    ),
    Operation(
        "delete", ("id",), "DELETE", "/v1/runs/{run_id}", {204: "deleted"}, (404, 409), None,
        "Delete a finished run",
    ),
    Operation(
        "retry_many", ("body",), "POST", "/v1/runs:retry", _BULK, _BODY_ERRORS, "BulkResult",
        "Retry the failed and canceled runs that match (at most limit)", body=RUN_FILTER,
    ),
    Operation(
        "delete_many", ("body",), "POST", "/v1/runs:delete", _BULK, _BODY_ERRORS, "BulkResult",
        "Delete the finished runs that match (at most limit)", body=RUN_FILTER,
    ),
    # --- jobs ---------------------------------------------------------------------------------
    Operation(
        "list_jobs", (), "GET", "/v1/jobs", {200: "every registered job"}, (), "JobList",
        "List the jobs",
    ),
    Operation(
        "get_job", ("id",), "GET", "/v1/jobs/{name}", _JOB, (404,), "Job", "Get a job",
    ),
    Operation(
        "pause_job", ("id",), "POST", "/v1/jobs/{name}/pause", _JOB, (404,), "Job",
        "Pause a job: it starts no run until resumed (running runs go on)",
    ),
    Operation(
        "resume_job", ("id",), "POST", "/v1/jobs/{name}/resume", _JOB, (404,), "Job",
        "Resume a job: its waiting runs start, in priority order",
    ),
    # --- schedules ----------------------------------------------------------------------------
    Operation(
        "create_schedule", ("body",), "POST", "/v1/schedules", {201: "created"},
        (*_BODY_ERRORS, 409), "JobSchedule",
        "Create a schedule (its first occurrence is materialized at once)", body=CREATE_SCHEDULE,
    ),
    Operation(
        "upsert_schedule", ("key", "body"), "PUT", "/v1/schedules/by-key/{key}",
        {201: "created", 200: "updated"}, (*_BODY_ERRORS, 409), "JobSchedule",
        "Create or change the schedule with this key (only the fields given)",
        body=SCHEDULE_FIELDS,
    ),
    Operation(
        "get_schedule", ("id",), "GET", "/v1/schedules/{schedule_id}", _SCHEDULE, (404,),
        "JobSchedule", "Get a schedule",
    ),
    Operation(
        "get_schedule_by_key", ("key",), "GET", "/v1/schedules/by-key/{key}", _SCHEDULE, (404,),
        "JobSchedule", "Get a schedule",
    ),
    Operation(
        "update_schedule", ("id", "patch"), "PATCH", "/v1/schedules/{schedule_id}", _SCHEDULE,
        (404, *_BODY_ERRORS, 409), "JobSchedule",
        "Change the fields given (timing changes replace the pending occurrence)",
        body=SCHEDULE_FIELDS,
    ),
    Operation(
        "update_schedule_by_key", ("key", "patch"), "PATCH", "/v1/schedules/by-key/{key}",
        _SCHEDULE, (404, *_BODY_ERRORS, 409), "JobSchedule",
        "Change the fields given (timing changes replace the pending occurrence)",
        body=SCHEDULE_FIELDS,
    ),
    Operation(
        "disable_schedule", ("id",), "POST", "/v1/schedules/{schedule_id}/disable", _SCHEDULE,
        (404,), "JobSchedule", "Disable (cancels the pending occurrence)",
    ),
    Operation(
        "disable_schedule_by_key", ("key",), "POST", "/v1/schedules/by-key/{key}/disable",
        _SCHEDULE, (404,), "JobSchedule", "Disable (cancels the pending occurrence)",
    ),
    Operation(
        "enable_schedule", ("id",), "POST", "/v1/schedules/{schedule_id}/enable", _SCHEDULE,
        (404, 409), "JobSchedule", _ENABLE,
    ),
    Operation(
        "enable_schedule_by_key", ("key",), "POST", "/v1/schedules/by-key/{key}/enable",
        _SCHEDULE, (404, 409), "JobSchedule", _ENABLE,
    ),
    Operation(
        "delete_schedule", ("id",), "DELETE", "/v1/schedules/{schedule_id}", {204: "deleted"},
        (404,), None, "Delete a schedule (its pending occurrence is canceled; its runs are kept)",
    ),
    Operation(
        "delete_schedule_by_key", ("key",), "DELETE", "/v1/schedules/by-key/{key}",
        {204: "deleted"}, (404,), None,
        "Delete a schedule (its pending occurrence is canceled; its runs are kept)",
    ),
    Operation(
        "list_schedules", ("query",), "GET", "/v1/schedules", {200: "a page"}, (422,),
        "SchedulePage", "List schedules, newest first", query=SCHEDULE_QUERY,
    ),
)  # fmt: skip

BY_NAME: Final[Mapping[str, Operation]] = {op.name: op for op in OPERATIONS}
