"""The Python Worker of the real-runtime suite: uses the service through `JobsClient` (GET
/client runs a fixed script of calls and answers what each returned or raised), and is the
target of remote handlers (the PyHandlers entrypoint)."""

import json
import sys
from collections.abc import Awaitable
from typing import Any

from workers import Request, Response, WorkerEntrypoint

from kumofire_jobs import ConflictError, UnknownJobError, ValidationError
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
