"""The Python Worker of the real-runtime suite: uses the service through `JobsClient` (GET
/client runs a fixed script of calls and answers what each returned or raised), and is the
target of remote handlers (the PyHandlers entrypoint)."""

import json
import sys
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

from workers import Request, Response, WorkerEntrypoint

from kumofire_jobs import ConflictError, CreateRequest, UnknownJobError, ValidationError
from kumofire_jobs.client import JobsClient, JobsServiceError
from kumofire_jobs.remote import RemoteContext


class PyHandlers(WorkerEntrypoint):
    async def run_job(self, run: dict[str, Any]) -> dict[str, str]:
        payload = run["payload"] or {}
        if payload.get("non_retryable"):
            raise ValueError(f"non_retryable: {payload['non_retryable']}")
        if run["attempt"] <= payload.get("fail_attempts", 0):
            raise RuntimeError(f"py relay failed (attempt {run['attempt']})")
        if payload.get("carry"):  # log lines and progress carried back with the result
            ctx = RemoteContext(run)
            ctx.log.info("carried", by="py")
            await ctx.progress({"step": payload["carry"]})
            return ctx.answer({"handled_by": "py", "id": run["id"]})
        return {"handled_by": "py", "id": run["id"]}


async def _outcome(call: Awaitable[object]) -> dict[str, object]:
    try:
        value = await call
    except (UnknownJobError, ValidationError, ConflictError, JobsServiceError) as error:
        return {"raised": type(error).__name__, "message": str(error)}
    return {"value": value}


class Default(WorkerEntrypoint):
    async def fetch(self, request: Request) -> Response:
        if str(request.url).endswith("/health"):
            return Response("ok")
        jobs = JobsClient(self.env.JOBS)
        if "/client-ops?run=" in str(request.url):
            return await _operations(jobs, str(request.url).rpartition("=")[2])
        out: dict[str, object] = {"python": sys.version.split()[0]}
        created = await jobs.create("echo", {"via": "JobsClient"}, dedupe_key="py-client-1")
        out["created"] = created.kumofire_job_run_id
        again = await jobs.create("echo", {"via": "JobsClient"}, dedupe_key="py-client-1")
        out["deduplicated"] = [again.deduplicated, again.kumofire_job_run_id]
        run = await jobs.get(created.kumofire_job_run_id)
        assert run is not None
        out["get"] = {
            "id": run.id,
            "name": run.name,
            "payload": run.payload,
            "tz": str(run.created_at.tzinfo),
        }
        page = await jobs.list(name="echo", limit=2)
        out["list"] = {"count": len(page.items), "has_cursor": page.next_cursor is not None}
        out["get_missing"] = await jobs.get("run_doesnotexist") is None
        out["get_schedule_missing"] = await jobs.get_schedule("sch_doesnotexist") is None
        out["delete_schedule_missing"] = await jobs.delete_schedule_by_key("nope")
        out["unknown_job"] = await _outcome(jobs.create("no_such_job"))
        out["bad_delay"] = await _outcome(jobs.create("echo", delay=-5))
        sched = await jobs.upsert_schedule("py-every", "echo", every=3600)
        out["schedule"] = {"key": sched.key, "type": sched.type, "expr": sched.expr}
        out["conflict"] = await _outcome(jobs.create_schedule("echo", every=60, key="py-every"))
        await jobs.delete_schedule_by_key("py-every")
        return Response(json.dumps(out), headers={"content-type": "application/json"})


async def _operations(jobs: JobsClient, finished: str) -> Response:
    """The operating calls (API.md Part 2) through `JobsClient`: `finished` is a succeeded run
    of the `flaky` job that failed its first attempt."""
    out: dict[str, object] = {}
    attempts = await jobs.attempts(finished)
    out["attempts"] = [(a.attempt, a.outcome, a.error is not None) for a in attempts or []]
    logs = await jobs.logs(finished)
    out["logs"] = [(line.attempt, line.event, line.fields) for line in logs or []]
    out["attempts_missing"] = await jobs.attempts("run_doesnotexist") is None
    out["deleted"] = [await jobs.delete(finished), await jobs.get(finished) is None]
    out["deleted_again"] = await jobs.delete(finished)
    later = await jobs.create("echo", delay=3600)
    promoted = await jobs.promote(later.kumofire_job_run_id)
    out["promoted"] = None if promoted is None else promoted.status.value
    out["promote_missing"] = await jobs.promote("run_doesnotexist") is None
    waiting = await jobs.create("echo", delay=3600)
    out["conflict"] = await _outcome(jobs.delete(waiting.kumofire_job_run_id))
    await jobs.cancel(waiting.kumofire_job_run_id)
    limited = await jobs.get_job("limited")
    out["job"] = None if limited is None else [limited.name, limited.options["concurrency"]]
    out["job_missing"] = await jobs.get_job("no_such_job") is None
    out["jobs"] = sorted(job.name for job in await jobs.list_jobs())
    paused = await jobs.pause_job("big")
    resumed = await jobs.resume_job("big")
    out["pause"] = [paused is not None and paused.paused, resumed is not None and resumed.paused]
    schedule = await jobs.create_schedule("echo", every=3600)
    now = datetime.now(UTC) + timedelta(seconds=1)
    canceled = await jobs.cancel_many(schedule_id=schedule.id, created_before=now)
    out["cancel_many"] = [canceled.count, canceled.has_more]
    out["bulk_refused"] = await _outcome(jobs.retry_many())
    await jobs.delete_schedule(schedule.id)
    removed = await jobs.delete_many(schedule_id=schedule.id)
    out["delete_many"] = [removed.count, removed.has_more]
    flow = await jobs.create_flow(
        CreateRequest(name="parent", payload={"expect": ["succeeded"]}),
        [CreateRequest(name="echo", payload={"child": 1})],
    )
    out["flow"] = [flow.parent_id, flow.children]
    return Response(json.dumps(out), headers={"content-type": "application/json"})
