"""A Python Worker that uses a deployed Kumofire Jobs service through its `JobsService`
entrypoint (the `JOBS` service binding in wrangler.toml).

- `POST /` with a JSON body `{"name": "echo", "payload": {...}, "delay": 5}` creates a run
  (every field optional: an empty body creates an `echo` run due now) and answers 202 with
  `{"kumofire_job_run_id": ..., "deduplicated": ...}`.
- `GET /runs/<id>` answers the run, or 404.

`JobsClient` gives the jobs API of the service with typed results and exceptions, as
`runtime.bind(...)` does inside the service itself.
"""

import json
from urllib.parse import urlparse

import msgspec
from workers import Response, WorkerEntrypoint

from kumofire_jobs import ValidationError
from kumofire_jobs.client import JobsClient


def json_response(data, status=200):
    return Response(json.dumps(data), status=status, headers={"content-type": "application/json"})


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        jobs = JobsClient(self.env.JOBS)
        path = urlparse(request.url).path
        method = str(request.method)

        if method == "GET" and path.startswith("/runs/"):
            run = await jobs.get(path.removeprefix("/runs/"))
            if run is None:
                return json_response({"error": "no such run"}, 404)
            return json_response(msgspec.to_builtins(run))

        if method != "POST" or path != "/":
            return json_response({"error": "try POST / or GET /runs/<id>"}, 404)
        text = await request.text()
        try:
            body = json.loads(text) if text.strip() else {}
        except ValueError:
            return json_response({"error": "the body is not JSON"}, 400)
        if not isinstance(body, dict):
            return json_response({"error": "the body must be a JSON object"}, 422)
        try:
            created = await jobs.create(
                body.get("name", "echo"),
                body.get("payload"),
                delay=body.get("delay"),
                dedupe_key=body.get("dedupe_key"),
            )
        except ValidationError as exc:  # UnknownJobError included: no handler for the name
            return json_response({"error": str(exc)}, 422)
        return json_response(msgspec.to_builtins(created), 202)
