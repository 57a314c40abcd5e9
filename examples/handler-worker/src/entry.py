"""A Worker that runs Kumofire Jobs runs routed to it by the service (its
`KUMOFIRE_REMOTE_HANDLERS` var names this Worker's service binding and `run_job`).

`run_job(run)` receives the run as the service's HTTP API answers it (`GET /v1/runs/{id}`):
`id`, `name`, `payload`, `attempt` (1 on the first execution), `max_attempts`, `last_error` of
the previous attempt, and the rest (`children`, for a flow's parent). Returning is success,
and the value returned is the run's `result`. Raising fails the attempt, and the
service retries it with its retry policy; an error whose message starts with
`non_retryable:` fails the run at once.

It has no dependencies: a target Worker does not need kumofire-jobs (one that has it may raise
`kumofire_jobs.NonRetryableError` and read the run with `kumofire_jobs.remote.remote_run`).
"""

import json

from workers import WorkerEntrypoint


async def notify(run):
    """`notify`: payload `{"to": "a@example.com", "text": "...", "fail_attempts": 0}`.
    `fail_attempts` makes its first attempts fail, to watch the retries."""
    payload = run["payload"] or {}
    to = payload.get("to")
    if not isinstance(to, str) or "@" not in to:
        raise ValueError(f"non_retryable: notify needs an email address in payload.to, got {to!r}")
    if run["attempt"] <= payload.get("fail_attempts", 0):
        raise RuntimeError(f"the mail relay timed out (attempt {run['attempt']})")
    # A real handler would call its provider here.
    print(json.dumps({"event": "notify.sent", "run_id": run["id"], "to": to}))
    return {"sent_to": to}


JOBS = {"notify": notify}


class Handlers(WorkerEntrypoint):
    """The entrypoint the service binds (`entrypoint = "Handlers"`)."""

    async def run_job(self, run):
        handler = JOBS.get(run["name"])
        if handler is None:
            raise ValueError(f"non_retryable: this Worker has no handler for {run['name']!r}")
        return await handler(run)
