"""`GET /v1/metrics`: the Prometheus text exposition format (version 0.0.4) of a snapshot.

Written here rather than with `prometheus_client`: that package registers process and
platform collectors and imports `ssl`, `socketserver` and `wsgiref` when imported, which the
Worker (Pyodide) has no use for; what this endpoint needs is a handful of gauges. The tests
parse the output with `prometheus_client`'s own parser.

Not an operation of the jobs API (`api/operations.py`): it is text for a scraper, not a JSON
answer a Python or RPC caller would read (they have `counts` and `list_jobs`), so it is an
HTTP route beside health and the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from starlette.requests import Request
from starlette.responses import Response

from ..core.jobs import Jobs
from ..core.metrics import MetricsSnapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name: str, labels: dict[str, str], value: float) -> str:
    given = ",".join(f'{key}="{_label(text)}"' for key, text in labels.items())
    number = str(int(value)) if float(value).is_integer() else repr(float(value))
    return f"{name}{{{given}}} {number}" if given else f"{name} {number}"


def _family(name: str, help_text: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *samples]


def render(snapshot: MetricsSnapshot) -> str:
    jobs = snapshot.jobs
    lines = [
        *_family(
            "kumofire_runs",
            "Runs stored, by job and status.",
            (
                _sample("kumofire_runs", {"job": job, "status": status}, n)
                for job, metrics in jobs.items()
                for status, n in metrics.counts.items()
            ),
        ),
        *_family(
            "kumofire_runs_oldest_due_age_seconds",
            "How long the job's oldest due run (queued, or scheduled and past its time) "
            "has waited to start; 0 when none waits.",
            (
                _sample(
                    "kumofire_runs_oldest_due_age_seconds",
                    {"job": job},
                    snapshot.oldest_due_seconds(job),
                )
                for job in jobs
            ),
        ),
        *_family(
            "kumofire_job_paused",
            "1 when the job is paused (it starts no run), else 0.",
            (
                _sample("kumofire_job_paused", {"job": job}, int(m.paused))
                for job, m in jobs.items()
            ),
        ),
        *_family(
            "kumofire_schedules",
            "Schedules, by whether they are enabled.",
            (
                _sample("kumofire_schedules", {"enabled": str(enabled).lower()}, n)
                for enabled, n in sorted(snapshot.schedules.items(), reverse=True)
            ),
        ),
    ]
    return "\n".join(lines) + "\n"


def metrics_endpoint(jobs: Callable[[Request], Jobs]) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint `web/app.py` serves at `GET /v1/metrics` (behind the token check)."""

    async def metrics(request: Request) -> Response:
        return Response(render(await jobs(request).metrics()), media_type=CONTENT_TYPE)

    return metrics
