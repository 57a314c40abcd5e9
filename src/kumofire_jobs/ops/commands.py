"""`kumofire-jobs runs|schedules|jobs ...`: the ops commands, against a running service
(the Worker's URL, or `kumofire-jobs dev`'s) through `HttpJobsClient`.

Exit codes: 0 done; 1 the service answered an error (its message is printed: not found,
conflict, invalid, unauthorized, ...); 2 usage (argparse's own code, and a `--url` that is no
http(s) URL); 3 the service cannot be reached (connection refused, DNS, timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from . import render

if TYPE_CHECKING:
    from ..http import HttpJobsClient

DEFAULT_URL: Final = "http://127.0.0.1:8787"  # the same as kumofire_jobs.http.DEFAULT_URL
TOKEN_ENV: Final = "KUMOFIRE_API_TOKEN"

OK, API_ERROR, USAGE, UNREACHABLE = 0, 1, 2, 3

COMMANDS: Final = ("runs", "schedules", "jobs")
"""The top-level commands this module adds to `kumofire-jobs`."""

Action = Callable[["HttpJobsClient", argparse.Namespace], Awaitable[Any]]


class Missing(Exception):
    """The id, key or name is not there (the API answered 404 `not_found`)."""


# --- parsers ----------------------------------------------------------------------------------


def add_ops_parsers(commands: Any) -> None:
    """Add `runs`, `schedules` and `jobs` to the `kumofire-jobs` subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", default=DEFAULT_URL, help=f"the service's base URL (default {DEFAULT_URL})"
    )
    common.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"the API's bearer token (default ${TOKEN_ENV})",
    )
    common.add_argument("--json", action="store_true", help="print the API's JSON")

    def group(name: str, help_text: str) -> Any:
        parser = commands.add_parser(name, help=help_text, description=help_text + ".")
        return parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def leaf(sub: Any, name: str, action: Action, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, parents=[common], help=help_text)
        parser.set_defaults(ops=action)
        return parser

    runs = group("runs", "list, inspect and control runs of a running service")
    listing = leaf(runs, "list", _runs_list, "list runs, newest first")
    listing.add_argument("--status")
    listing.add_argument("--name", help="job name")
    listing.add_argument("--schedule-id")
    listing.add_argument("--parent-id", help="a flow's parent: list its children")
    listing.add_argument("--limit", type=int, default=50, help="1 to 200 (default 50)")
    listing.add_argument("--cursor", help="the next page's cursor, as the last page printed")
    for name, action, help_text in (
        ("get", _runs_get, "show a run"),
        ("cancel", _run_action("cancel"), "cancel an unfinished run (a flow parent's too)"),
        ("retry", _run_action("retry"), "run a failed or canceled run again now"),
        ("promote", _run_action("promote"), "make a scheduled run due now"),
        ("delete", _runs_delete, "delete a finished run"),
        ("attempts", _runs_attempts, "a run's attempts, oldest first"),
        ("logs", _runs_logs, "what a run's handler logged, oldest first"),
    ):
        leaf(runs, name, action, help_text).add_argument("id", metavar="ID")

    schedules = group("schedules", "list, inspect and control schedules of a running service")
    listing = leaf(schedules, "list", _schedules_list, "list schedules, newest first")
    listing.add_argument("--enabled", choices=("true", "false"))
    listing.add_argument("--name", help="job name")
    listing.add_argument("--limit", type=int, default=50, help="1 to 200 (default 50)")
    listing.add_argument("--cursor", help="the next page's cursor, as the last page printed")
    for name, help_text in (
        ("get", "show a schedule"),
        ("enable", "enable a schedule (materializes its next occurrence)"),
        ("disable", "disable a schedule (cancels its pending occurrence)"),
        ("delete", "delete a schedule (its runs are kept)"),
    ):
        parser = leaf(schedules, name, _schedule_action(name), help_text)
        parser.add_argument("id", metavar="ID", help="the schedule's id (or its key with --key)")
        parser.add_argument("--key", action="store_true", help="ID is the schedule's key")

    jobs = group("jobs", "list, pause and resume the jobs of a running service")
    leaf(jobs, "list", _jobs_list, "every registered job: paused, counts by status")
    for name, help_text in (
        ("get", "show a job"),
        ("pause", "start no run of the job until resumed (running runs go on)"),
        ("resume", "start the job's waiting runs again, by priority"),
    ):
        leaf(jobs, name, _job_action(name), help_text).add_argument("name", metavar="NAME")


# --- running ----------------------------------------------------------------------------------


def run_ops(args: argparse.Namespace) -> int:
    """Run the ops command `args` names; the exit code (see the module's docstring)."""
    try:
        import httpx

        from ..core.errors import KumofireJobsError
        from ..http import HttpJobsClient, HttpJobsError, bearer_token
    except ImportError as exc:  # httpx is an extra
        return _fail(f"the {args.command} commands need httpx ({exc}): pip install "
                     "'kumofire-jobs[local]' (or [http], without the dev server); in a clone "
                     "of the repository, uv sync", USAGE)  # fmt: skip

    async def call() -> Any:
        async with HttpJobsClient(args.url, args.token) as client:
            return await args.ops(client, args)

    if args.token:
        try:
            bearer_token(args.token)
        except ValueError as exc:
            return _fail(f"--token (or ${TOKEN_ENV}): {exc}", USAGE)

    try:
        output = asyncio.run(call())
    except KeyboardInterrupt:
        return 130
    except Missing as exc:
        return _fail(f"not_found: {exc}", API_ERROR)
    except HttpJobsError as exc:
        hint = f" (give --token or set ${TOKEN_ENV})" if exc.status == 401 else ""
        if exc.status == 404 and exc.code == "not_found":  # no route: the commands' own exist
            root = httpx.URL(args.url).copy_with(path="/", query=None, fragment=None)
            example = str(root).rstrip("/")
            hint = f" (give --url the service's root, such as {example}, with no path or query)"
        return _fail(f"{exc.code}: {exc.message}{hint}", API_ERROR)
    except KumofireJobsError as exc:
        return _fail(f"{exc.code}: {exc}", API_ERROR)
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        return _fail(f"--url {args.url!r} is not an http(s) URL: {exc}", USAGE)
    except httpx.TransportError as exc:
        return _fail(f"cannot reach the service at {args.url}: {_reason(exc)}", UNREACHABLE)
    print(render.safe(render.dumps(output) if args.json else output))
    return OK


def _reason(exc: BaseException) -> str:
    """Why a connection failed, in words: the refusal or timeout under httpx's wrapping."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (is the service running?)"
        if isinstance(cause, TimeoutError):
            return "timed out"
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__


def _fail(message: str, code: int) -> int:
    print(render.safe(f"kumofire-jobs: {message}"), file=sys.stderr)
    return code


def _found(value: Any, what: str) -> Any:
    if value is None or value is False:
        raise Missing(f"{what} not found")
    return value


def _shown(args: argparse.Namespace, value: Any, text: Callable[[Any], str]) -> Any:
    """What `run_ops` prints: the value itself with --json, else its text."""
    return value if args.json else text(render.plain(value))


# --- runs -------------------------------------------------------------------------------------


def _runs_table(runs: list[dict[str, Any]]) -> str:
    return render.table(
        ("ID", "JOB", "STATUS", "ATTEMPT", "SCHEDULED FOR", "FINISHED", "LAST ERROR"),
        (
            (
                run["id"], run["name"], run["status"], f"{run['attempt']}/{run['max_attempts']}",
                render.when(run["scheduled_for"]), render.when(run["finished_at"]),
                render.line(_last_line(run["last_error"])),
            )
            for run in runs
        ),
    )  # fmt: skip


# A traceback's last line names the exception's class with its module
# (`kumofire_jobs.core.errors.NonRetryableError: ...`); a run's last_error does not.
_QUALIFIED = re.compile(r"^(?:[a-z_][a-z0-9_]*\.)+(?=[A-Z]\w*(?::|$))")


def _last_line(text: str | None) -> str | None:
    """An error's last non-empty line, the exception itself after its traceback, named by its
    class alone, as a run's last_error names it (the one-line summary; --json keeps it all)."""
    if text is None:
        return None
    lines = [line for line in text.splitlines() if line.strip()]
    return _QUALIFIED.sub("", lines[-1]) if lines else text


def _page(items: str, next_cursor: str | None) -> str:
    return items if next_cursor is None else f"{items}\n(more: --cursor {next_cursor})"


async def _runs_list(client: HttpJobsClient, args: argparse.Namespace) -> Any:
    page = await client.list(
        status=args.status, name=args.name, schedule_id=args.schedule_id,
        parent_id=args.parent_id, limit=args.limit, cursor=args.cursor,
    )  # fmt: skip
    return _shown(args, page, lambda p: _page(_runs_table(p["items"]), p["next_cursor"]))


def _run_fields(run: dict[str, Any]) -> str:
    return render.fields(run, json_fields=("payload", "progress", "result"))


async def _runs_get(client: HttpJobsClient, args: argparse.Namespace) -> Any:
    return _shown(args, _found(await client.get(args.id), f"run {args.id}"), _run_fields)


def _run_action(name: str) -> Action:
    async def act(client: HttpJobsClient, args: argparse.Namespace) -> Any:
        run = _found(await getattr(client, name)(args.id), f"run {args.id}")
        return _shown(args, run, lambda r: _runs_table([r]))

    return act


async def _runs_delete(client: HttpJobsClient, args: argparse.Namespace) -> Any:
    _found(await client.delete(args.id), f"run {args.id}")
    return _shown(args, {"id": args.id, "deleted": True}, lambda d: f"deleted {d['id']}")


def _items(value: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = value["items"]
    return items


def _duration(ms: Any) -> str:
    return "-" if ms is None else f"{ms / 1000:.3f}s"


async def _runs_attempts(client: HttpJobsClient, args: argparse.Namespace) -> Any:
    attempts = _found(await client.attempts(args.id), f"run {args.id}")
    return _shown(
        args,
        {"items": attempts},
        lambda value: render.table(
            ("ATTEMPT", "OUTCOME", "STARTED", "FINISHED", "DURATION", "ERROR"),
            (
                (
                    a["attempt"], a["outcome"] or "-", render.when(a["started_at"]),
                    render.when(a["finished_at"]), _duration(a["duration_ms"]),
                    render.line(_last_line(a["error"])),
                )
                for a in _items(value)
            ),
        ),
    )  # fmt: skip


def _log_fields(fields: Any) -> str:
    if not fields:
        return ""
    if not isinstance(fields, dict):
        return render.line(fields, 200)
    return " ".join(f"{key}={render.line(value, 200)}" for key, value in fields.items())


async def _runs_logs(client: HttpJobsClient, args: argparse.Namespace) -> Any:
    lines = _found(await client.logs(args.id), f"run {args.id}")
    return _shown(
        args,
        {"items": lines},
        lambda value: render.table(
            ("AT", "ATTEMPT", "LEVEL", "EVENT", "FIELDS"),
            (
                (render.when(entry["at"]), entry["attempt"], entry["level"], entry["event"],
                 _log_fields(entry["fields"]))
                for entry in _items(value)
            ),
        ),
    )  # fmt: skip


# --- schedules --------------------------------------------------------------------------------


def _timing(schedule: dict[str, Any]) -> str:
    if schedule["type"] == "interval":
        return f"every {schedule['expr']}s"
    zone = schedule["timezone"]
    return f"{schedule['expr']}" + (f" ({zone})" if zone else "")


def _schedules_table(schedules: list[dict[str, Any]]) -> str:
    return render.table(
        ("ID", "KEY", "JOB", "TIMING", "ENABLED", "NEXT RUN", "LAST SCHEDULED", "COUNT"),
        (
            (
                s["id"], s["key"] or "-", s["name"], _timing(s), "yes" if s["enabled"] else "no",
                render.when(s["next_run_at"]), render.when(s["last_scheduled_at"]),
                s["count"] if s["limit"] is None else f"{s['count']}/{s['limit']}",
            )
            for s in schedules
        ),
    )  # fmt: skip


async def _schedules_list(client: HttpJobsClient, args: argparse.Namespace) -> Any:
    enabled = None if args.enabled is None else args.enabled == "true"
    page = await client.list_schedules(
        enabled=enabled, name=args.name, limit=args.limit, cursor=args.cursor
    )
    return _shown(args, page, lambda p: _page(_schedules_table(p["items"]), p["next_cursor"]))


def _schedule_fields(schedule: dict[str, Any]) -> str:
    return render.fields(schedule, json_fields=("payload",))


def _schedule_action(name: str) -> Action:
    async def act(client: HttpJobsClient, args: argparse.Namespace) -> Any:
        method = f"{name}_schedule_by_key" if args.key else f"{name}_schedule"
        what = f"schedule {'with key ' if args.key else ''}{args.id}"
        result = _found(await getattr(client, method)(args.id), what)
        if name == "delete":
            deleted = {"id" if not args.key else "key": args.id, "deleted": True}
            return _shown(args, deleted, lambda d: f"deleted {what}")
        if name == "get":
            return _shown(args, result, _schedule_fields)
        return _shown(args, result, lambda s: _schedules_table([s]))

    return act


# --- jobs -------------------------------------------------------------------------------------


def _jobs_table(jobs: list[dict[str, Any]]) -> str:
    statuses = list(jobs[0]["counts"]) if jobs else []
    return render.table(
        ("NAME", "PAUSED", *(status.upper() for status in statuses)),
        (
            (job["name"], "yes" if job["paused"] else "no",
             *(job["counts"].get(status, 0) for status in statuses))
            for job in jobs
        ),
    )  # fmt: skip


async def _jobs_list(client: HttpJobsClient, args: argparse.Namespace) -> Any:
    jobs = await client.list_jobs()
    return _shown(args, {"items": jobs}, lambda d: _jobs_table(d["items"]))


def _job_action(name: str) -> Action:
    async def act(client: HttpJobsClient, args: argparse.Namespace) -> Any:
        method = "get_job" if name == "get" else f"{name}_job"
        job = _found(await getattr(client, method)(args.name), f"job {args.name}")
        return _shown(args, job, lambda j: _jobs_table([j]))

    return act
