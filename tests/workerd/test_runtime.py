"""The project's Worker on the real runtime: workerd under `wrangler dev`, offline, with
wrangler's local D1, Queues and Durable Objects, called over HTTP, over RPC from a JavaScript
and a Python Worker, through its queue, its cron handler and across a restart.

Real time runs here, so the tests wait by polling with a deadline. Each run's lateness
(`started_at - scheduled_for`) is recorded and printed at the end of the session."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from kumofire_jobs.core.ids import IdFactory
from tests.support.lateness import record

from .harness import JS_WORKER, PY_WORKER, REPO, SERVICE, Stack, request
from .workers.suite_handlers import LEASE_SECONDS

pytestmark = [pytest.mark.workerd, pytest.mark.timeout(420)]

FINISHED = ("succeeded", "failed", "canceled")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def lateness_ms(run: dict[str, Any]) -> float:
    return (parse(run["started_at"]) - parse(run["scheduled_for"])) / timedelta(milliseconds=1)


class Api:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.url = stack.workers[SERVICE].url

    def create(self, body: dict[str, Any]) -> str:
        status, answer = request(f"{self.url}/v1/runs", "POST", body)
        assert status == 202, answer
        return str(answer["kumofire_job_run_id"])

    def get(self, run_id: str) -> dict[str, Any]:
        status, answer = request(f"{self.url}/v1/runs/{run_id}")
        assert status == 200, answer
        return dict(answer)

    def wait(
        self, run_id: str, statuses: tuple[str, ...] = FINISHED, timeout: float = 60
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.get(run_id)
            if run["status"] in statuses:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"run {run_id} still {run['status']} after {timeout} s:\n"
                    + self.stack.tail(SERVICE)
                )
            time.sleep(0.1)

    def runs_of_schedule(self, schedule_id: str) -> list[dict[str, Any]]:
        status, answer = request(f"{self.url}/v1/runs?schedule_id={schedule_id}&limit=50")
        assert status == 200, answer
        return sorted(answer["items"], key=lambda run: run["scheduled_for"])

    def rpc(self, method: str, *args: Any) -> dict[str, Any]:
        """A JobsService call made by the JavaScript Worker: {ok, result} or {ok, message}."""
        status, answer = request(
            f"{self.stack.workers[JS_WORKER].url}/rpc", "POST", {"method": method, "args": args}
        )
        assert status == 200, answer
        return dict(answer)

    def log(self) -> str:
        return self.stack.workers[SERVICE].log.read_text(errors="replace")


@pytest.fixture(scope="module")
def api(stack: Stack) -> Api:
    return Api(stack)


def test_a_run_succeeds(api: Api) -> None:
    run = api.wait(api.create({"name": "echo", "payload": {"hello": "workerd"}}))
    assert (run["status"], run["attempt"], run["payload"]) == (
        "succeeded", 1, {"hello": "workerd"},
    )  # fmt: skip
    assert parse(run["started_at"]) >= parse(run["scheduled_for"])
    record("run due now", lateness_ms(run))


def test_the_dashboard_is_served_from_the_package(api: Api) -> None:
    """The page's files reach Python on the Worker (`.html` by wrangler's default rules, `.js`
    and `.css` by the `[[rules]]` of wrangler.toml) and are read with importlib.resources;
    they need no token, the API they call does."""
    ui = REPO / "src" / "kumofire_jobs" / "web" / "ui"
    names = sorted(p.name for p in ui.iterdir() if p.is_file())
    assert {"index.html", "app.js", "app.css"} <= set(names)
    for name in names:
        path = "" if name == "index.html" else name
        with urllib.request.urlopen(f"{api.url}/ui/{path}", timeout=60) as response:
            assert response.status == 200, name
            assert response.headers["content-type"].split(";")[0] in (
                "text/html", "text/javascript", "text/css"
            ), name  # fmt: skip
            assert response.read() == (ui / name).read_bytes(), name
    assert request(f"{api.url}/v1/runs", token=None)[0] == 401


def test_metrics_on_the_real_runtime(api: Api) -> None:
    """`GET /v1/metrics` under Pyodide, over wrangler's local D1: the Prometheus text parses."""
    from prometheus_client.parser import text_string_to_metric_families

    api.wait(api.create({"name": "echo"}))
    status, text = request(f"{api.url}/v1/metrics")
    assert status == 200 and isinstance(text, str), text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("kumofire_runs", (("job", "echo"), ("status", "succeeded")))] >= 1
    assert samples[("kumofire_job_paused", (("job", "echo"),))] == 0
    assert ("kumofire_schedules", (("enabled", "true"),)) in samples
    assert request(f"{api.url}/v1/metrics", token=None)[0] == 401


def test_a_delayed_run_starts_on_time(api: Api) -> None:
    run = api.wait(api.create({"name": "echo", "delay": 3}))
    assert run["status"] == "succeeded"
    scheduled, created = parse(run["scheduled_for"]), parse(run["created_at"])
    assert scheduled - created == timedelta(seconds=3)
    late = lateness_ms(run)
    assert 0 <= late < 1000, run  # never early; on its alarm, not on a cron tick
    record("delayed run (3 s)", late)


def test_a_failing_run_is_retried_until_it_succeeds(api: Api) -> None:
    run = api.wait(api.create({"name": "flaky", "payload": {"fail_attempts": 2}}))
    assert (run["status"], run["attempt"]) == ("succeeded", 3)
    record("retried run, attempt 3 (after 1 s + 2 s backoff)", lateness_ms(run))
    # Its history, as the Worker's own consume code recorded it (API.md Part 2).
    assert (run["progress"], run["result"]) == ({"attempt": 3}, {"attempts": 3})
    status, attempts = request(f"{api.url}/v1/runs/{run['id']}/attempts")
    assert status == 200, attempts
    assert [(a["attempt"], a["outcome"]) for a in attempts["items"]] == [
        (1, "retried"), (2, "retried"), (3, "succeeded"),
    ]  # fmt: skip
    assert "RuntimeError: flaky failed attempt 1" in attempts["items"][0]["error"]
    assert attempts["items"][0]["error"].startswith("Traceback")
    status, logs = request(f"{api.url}/v1/runs/{run['id']}/logs")
    assert status == 200, logs
    assert [(line["event"], line["fields"]) for line in logs["items"]] == [
        ("flaky.attempt", {"seen": n}) for n in (1, 2, 3)
    ]


def test_a_run_fails_when_its_attempts_are_spent(api: Api) -> None:
    run = api.wait(
        api.create({"name": "flaky", "payload": {"fail_attempts": 9}, "max_attempts": 2})
    )
    assert (run["status"], run["attempt"]) == ("failed", 2)
    assert "flaky failed attempt 2" in run["last_error"]
    fatal = api.wait(api.create({"name": "fatal"}))
    assert (fatal["status"], fatal["attempt"]) == ("failed", 1)
    assert "never retried" in fatal["last_error"]
    record("failed run, attempt 2", lateness_ms(run))


def test_a_scheduled_run_is_canceled(api: Api) -> None:
    run_id = api.create({"name": "echo", "delay": 2})
    status, canceled = request(f"{api.url}/v1/runs/{run_id}/cancel", "POST")
    assert status == 200, canceled
    assert canceled["status"] == "canceled"
    time.sleep(3)  # past its due time: its coordinator must not start it
    run = api.get(run_id)
    assert (run["status"], run["started_at"], run["attempt"]) == ("canceled", None, 0)


def test_an_every_schedule_runs_each_interval(api: Api) -> None:
    status, schedule = request(
        f"{api.url}/v1/schedules/by-key/every-2s", "PUT", {"name": "echo", "every": 2}
    )
    assert status == 201, schedule
    deadline = time.monotonic() + 30
    while True:
        done = [r for r in api.runs_of_schedule(schedule["id"]) if r["status"] == "succeeded"]
        if len(done) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    request(f"{api.url}/v1/schedules/by-key/every-2s", "DELETE")
    assert len(done) >= 3, api.runs_of_schedule(schedule["id"])
    times = [parse(r["scheduled_for"]) for r in done]
    assert all(b - a == timedelta(seconds=2) for a, b in itertools.pairwise(times))
    for run in done:
        assert lateness_ms(run) >= 0
        record("every 2 s schedule occurrence", lateness_ms(run))


def test_concurrent_schedule_changes_on_d1_keep_one_pending_occurrence(api: Api) -> None:
    """The guarded change statements (`UPDATE ... FROM`, the pending occurrence's cancel by
    subquery) on the platform's D1, with concurrent PUTs of one key."""
    url = f"{api.url}/v1/schedules/by-key/concurrent"
    status, first = request(url, "PUT", {"name": "echo", "every": 600})
    assert status == 201, first
    status, patched = request(url, "PATCH", {"payload": {"p": 1}})  # the timing kept
    assert status == 200 and patched["next_run_at"] == first["next_run_at"], patched
    bodies = [{"name": "echo", "every": 600 + i, "payload": {"i": i}} for i in range(10)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda body: request(url, "PUT", body), bodies))
    assert [code for code, _ in answers] == [200] * len(bodies), answers
    status, final = request(url)
    assert status == 200 and final in [answer for _, answer in answers]
    runs = api.runs_of_schedule(first["id"])
    pending = [r for r in runs if r["status"] == "scheduled"]
    request(url, "DELETE")
    assert len(pending) == 1 and {r["status"] for r in runs} == {"scheduled", "canceled"}, runs
    assert pending[0]["payload"] == final["payload"]
    assert pending[0]["scheduled_for"] == final["next_run_at"]


def test_a_seconds_cron_in_a_time_zone(api: Api) -> None:
    zone = ZoneInfo("Asia/Kolkata")  # UTC+05:30: its hours are never UTC's
    now = datetime.now(zone)
    hours = f"{now.hour},{(now + timedelta(hours=1)).hour}"
    status, schedule = request(
        f"{api.url}/v1/schedules/by-key/cron-kolkata",
        "PUT",
        {"name": "echo", "cron": f"*/3 * {hours} * * *", "timezone": "Asia/Kolkata"},
    )
    assert status == 201, schedule
    deadline = time.monotonic() + 30
    while True:
        done = [r for r in api.runs_of_schedule(schedule["id"]) if r["status"] == "succeeded"]
        if len(done) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    request(f"{api.url}/v1/schedules/by-key/cron-kolkata", "DELETE")
    assert len(done) >= 2, api.runs_of_schedule(schedule["id"])
    for run in done:
        due = parse(run["scheduled_for"])
        assert due.second % 3 == 0 and due.microsecond == 0
        assert due.astimezone(zone).hour in {int(h) for h in hours.split(",")}
        record("*/3 s cron in Asia/Kolkata occurrence", lateness_ms(run))


def test_the_cron_handler_reconciles(api: Api) -> None:
    worker = api.stack.workers[SERVICE]
    status, _ = request(f"{worker.url}/cdn-cgi/handler/scheduled?cron=*+*+*+*+*", token=None)
    assert status == 200
    # A healthy system: reconciliation finds nothing to repair, and the Worker still serves.
    run = api.wait(api.create({"name": "echo"}))
    assert run["status"] == "succeeded"


def test_the_cron_handler_repairs_a_run_no_coordinator_holds(api: Api) -> None:
    """A run written to D1 behind the runtime's back (as a lost arm would leave it): due two
    minutes ago, past reconciliation's grace, and no coordinator knows it. Only the cron
    handler can find it."""
    due = int(time.time() * 1000) - 120_000
    run_id = IdFactory().run_id(due)
    api.stack.d1_execute(
        "INSERT INTO kumofire_job_runs (id, name, status, attempt, max_attempts, "
        f"scheduled_for, created_at, updated_at) VALUES ('{run_id}', 'echo', 'scheduled', 0, 3, "
        f"{due}, {due}, {due})"
    )
    time.sleep(2)
    assert api.get(run_id)["status"] == "scheduled"  # nothing delivers it by itself
    worker = api.stack.workers[SERVICE]
    status, _ = request(f"{worker.url}/cdn-cgi/handler/scheduled?cron=*+*+*+*+*", token=None)
    assert status == 200
    run = api.wait(run_id, timeout=30)
    assert (run["status"], run["attempt"]) == ("succeeded", 1), run


def test_rpc_from_javascript(api: Api) -> None:
    for _ in range(2):  # so that a page of two has a next one, whatever ran before
        api.create({"name": "echo"})
    created = api.rpc("create", {"name": "echo", "payload": {"via": "js"}, "delay": 1})
    assert created["ok"], created
    run_id = created["result"]["kumofire_job_run_id"]
    got = api.rpc("get", run_id)
    assert got["ok"] and got["result"]["payload"] == {"via": "js"}
    listed = api.rpc("list", {"name": "echo", "limit": 2})
    assert listed["ok"] and len(listed["result"]["items"]) == 2
    assert listed["result"]["next_cursor"]
    counts = api.rpc("counts", {"name": "echo"})
    assert counts["ok"] and counts["result"]["succeeded"] >= 1
    run = api.wait(run_id)
    assert run["status"] == "succeeded"
    record("delayed run (1 s) created over RPC", lateness_ms(run))


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (("get", "run_doesnotexist"), "not_found"),
        (("get_schedule_by_key", "no-such-key"), "not_found"),
        (("create", {"name": "no_such_job"}), "unknown_job"),
        (("create", {"name": "echo", "delay": -1}), "validation_error"),
        (("create", {"name": "echo", "bogus": 1}), "validation_error"),
    ],
)
def test_rpc_errors_seen_from_javascript_start_with_their_code(
    api: Api, call: tuple[Any, ...], code: str
) -> None:
    uncaught_before = api.log().count("Uncaught")
    answer = api.rpc(*call)
    # An Error answered as the call's value (a raised Python exception would reach the caller
    # as "PythonError: Traceback ...").
    assert not answer["ok"] and answer.get("answered"), answer
    assert answer["message"].startswith(f"{code}: "), answer["message"]
    assert "Traceback" not in answer["message"]
    assert answer["name"] == "Error"
    # Its `code` property crosses Workers RPC in one process; the dev registry's proxy between
    # two `wrangler dev` processes (as here) drops an Error's own properties.
    assert answer.get("code") in (None, code)
    # An expected error is an answer, not a crash: the service logs no uncaught exception.
    time.sleep(0.5)  # the service's log line, if any, follows the answer
    assert api.log().count("Uncaught") == uncaught_before, api.stack.tail(SERVICE)


def test_rpc_from_python_through_jobs_client(api: Api) -> None:
    for _ in range(2):  # so that a page of two has a next one, whatever ran before
        api.create({"name": "echo"})
    status, out = request(f"{api.stack.workers[PY_WORKER].url}/client", token=None, timeout=120)
    assert status == 200, out
    assert out["python"].startswith("3.13."), out["python"]  # Pyodide 0.28.2's CPython
    assert out["deduplicated"] == [True, out["created"]]
    assert out["get"] == {
        "id": out["created"], "name": "echo", "payload": {"via": "JobsClient"}, "tz": "UTC",
    }  # fmt: skip
    assert out["list"] == {"count": 2, "has_cursor": True}
    assert out["get_missing"] is True
    assert out["get_schedule_missing"] is True
    assert out["delete_schedule_missing"] is False
    assert out["unknown_job"]["raised"] == "UnknownJobError"
    assert out["bad_delay"]["raised"] == "ValidationError"
    assert out["schedule"] == {"key": "py-every", "type": "interval", "expr": "3600"}
    assert out["conflict"]["raised"] == "ConflictError"
    assert api.wait(out["created"])["status"] == "succeeded"


def test_operating_calls_from_python_through_jobs_client(api: Api) -> None:
    # API.md Part 2 through a real service binding: datetimes out as RFC 3339, JobInfo,
    # BulkResult, RunAttempt and LogLine back, None and False for what is missing.
    finished = api.create({"name": "flaky", "payload": {"fail_attempts": 1}})
    assert api.wait(finished)["status"] == "succeeded"
    url = f"{api.stack.workers[PY_WORKER].url}/client-ops?run={finished}"
    status, out = request(url, token=None, timeout=120)
    assert status == 200, out
    assert out["attempts"] == [[1, "retried", True], [2, "succeeded", False]]
    assert out["logs"] == [[1, "flaky.attempt", {"seen": 1}], [2, "flaky.attempt", {"seen": 2}]]
    assert out["attempts_missing"] is True
    assert out["deleted"] == [True, True] and out["deleted_again"] is False
    assert out["promoted"] == "scheduled" and out["promote_missing"] is True
    assert out["conflict"]["raised"] == "ConflictError"
    assert out["job"] == ["limited", 1] and out["job_missing"] is True
    assert {"echo", "flaky", "limited", "js_notify", "py_notify"} <= set(out["jobs"])
    assert out["pause"] == [True, False]
    assert out["cancel_many"] == [1, False]
    assert out["bulk_refused"]["raised"] == "ValidationError"
    # the canceled occurrence, and the successor the cancel materialized (if it was in time)
    # that deleting the schedule canceled
    assert out["delete_many"] in ([1, False], [2, False])
    parent_id, children = out["flow"]
    assert api.wait(parent_id)["status"] == "succeeded"
    assert [api.get(child)["status"] for child in children] == ["succeeded"]


@pytest.mark.parametrize("job", ["js_notify", "py_notify"])
def test_remote_handlers(api: Api, job: str) -> None:
    ok = api.wait(api.create({"name": job, "payload": {}}))
    assert (ok["status"], ok["attempt"]) == ("succeeded", 1), ok
    retried = api.wait(api.create({"name": job, "payload": {"fail_attempts": 1}}))
    assert (retried["status"], retried["attempt"]) == ("succeeded", 2), retried
    fatal = api.wait(api.create({"name": job, "payload": {"non_retryable": "bad address"}}))
    assert (fatal["status"], fatal["attempt"]) == ("failed", 1), fatal
    assert "non_retryable: bad address" in fatal["last_error"]
    carried = api.wait(api.create({"name": job, "payload": {"carry": 7}}))
    assert (carried["status"], carried["progress"]) == ("succeeded", {"step": 7}), carried
    assert carried["result"]["handled_by"] == job[:2]
    status, logs = request(f"{api.url}/v1/runs/{carried['id']}/logs")
    assert status == 200, logs
    [line] = logs["items"]
    assert (line["event"], line["fields"]["by"]) == ("carried", job[:2]), line
    assert line["fields"]["remote_at"].endswith("Z"), line
    record(f"remote handler ({job})", lateness_ms(ok))


def test_the_lease_is_renewed_while_a_long_handler_runs(api: Api) -> None:
    seconds = LEASE_SECONDS * 1.5  # outlives the lease: only renewals keep it
    run = api.wait(api.create({"name": "slow", "payload": {"seconds": seconds}}), timeout=60)
    assert (run["status"], run["attempt"]) == ("succeeded", 1), run
    took = parse(run["finished_at"]) - parse(run["started_at"])
    assert took >= timedelta(seconds=seconds)


def test_a_running_handler_is_canceled(api: Api) -> None:
    run_id = api.create({"name": "slow", "payload": {"seconds": 120}})
    api.wait(run_id, ("running",), timeout=30)
    status, canceled = request(f"{api.url}/v1/runs/{run_id}/cancel", "POST")
    assert status == 200, canceled
    assert canceled["status"] == "canceled"
    time.sleep(LEASE_SECONDS + 2)  # past the lease: nothing redelivers or finishes it
    run = api.get(run_id)
    assert (run["status"], run["attempt"]) == ("canceled", 1), run
    # The consumer stopped waiting for it: the next run is served at once. (Wrangler's local
    # queue dispatches one batch at a time, so this also proves the canceled handler's
    # invocation ended, long before its 120 s sleep would have.)
    assert api.wait(api.create({"name": "echo"}), timeout=20)["status"] == "succeeded"


def queue_batches(log: str) -> list[tuple[int, int]]:
    """wrangler's `QUEUE kumofire-jobs acked/total` lines: one per batch consumed."""
    return [(int(a), int(t)) for a, t in re.findall(r"QUEUE kumofire-jobs (\d+)/(\d+)", log)]


def test_malformed_queue_messages_are_acknowledged_and_ignored(api: Api) -> None:
    log = api.log()
    malformed_before, batches_before = log.count("message.malformed"), len(queue_batches(log))
    js = api.stack.workers[JS_WORKER].url
    bad: list[Any] = [
        {"garbage": 1},
        {"version": 2, "kumofireJobRunId": "run_x"},
        {"version": "1", "kumofireJobRunId": "run_x"},
        {"version": 1, "kumofireJobRunId": "run_x", "more": True},
        [1, 2, 3],
    ]
    status, sent = request(f"{js}/queue", "POST", {"messages": bad})
    assert (status, sent) == (200, {"sent": len(bad)})
    status, sent = request(f"{js}/queue", "POST", {"messages": ["not json"], "contentType": "text"})
    assert status == 200, sent
    # A well-formed message for a run that does not exist is ignored too (not malformed).
    status, sent = request(
        f"{js}/queue", "POST", {"messages": [{"version": 1, "kumofireJobRunId": "run_none"}]}
    )
    assert status == 200, sent
    deadline = time.monotonic() + 30
    while True:
        log = api.log()
        batches = queue_batches(log)[batches_before:]
        if sum(total for _, total in batches) >= len(bad) + 2:
            break
        assert time.monotonic() < deadline, api.stack.tail(SERVICE)
        time.sleep(0.2)
    time.sleep(1)  # a retried message would be delivered again at once
    batches = queue_batches(api.log())[batches_before:]
    assert all(acked == total for acked, total in batches), batches  # acked, never retried
    assert sum(total for _, total in batches) == len(bad) + 2, batches
    assert api.log().count("message.malformed") - malformed_before == len(bad) + 1
    assert api.wait(api.create({"name": "echo"}))["status"] == "succeeded"


MAX_LOG_LINE = 4096


def test_a_large_payload(api: Api) -> None:
    logged_before = len(api.log())
    data = "x" * 700_000  # the limit is 740,000 bytes as JSON
    payload = {"data": data, "size": len(data), "sha256": hashlib.sha256(data.encode()).hexdigest()}
    run = api.wait(api.create({"name": "big", "payload": payload}), timeout=60)
    assert (run["status"], run["attempt"]) == ("succeeded", 1), run["last_error"]
    assert run["payload"]["data"] == data
    record("700 KB payload", lateness_ms(run))
    # The example handler logs the payload's size; nothing logs its contents.
    echoed = api.wait(api.create({"name": "echo", "payload": payload}), timeout=60)
    assert echoed["status"] == "succeeded"
    time.sleep(0.3)
    lines = api.log()[logged_before:].splitlines()
    assert max(len(line) for line in lines) < MAX_LOG_LINE
    [echo] = [json.loads(line) for line in lines if '"event":"echo"' in line]
    assert echo["payload_bytes"] > 700_000


def test_the_worker_logs_json_lines(api: Api) -> None:
    run_id = api.wait(api.create({"name": "echo"}))["id"]
    time.sleep(0.3)
    ours = [line for line in api.log().splitlines() if run_id in line and '"event"' in line]
    assert ours and all(line.startswith("{") and "\x1b" not in line for line in ours), ours
    events = [json.loads(line) for line in ours]  # one JSON object per line
    assert [e["event"] for e in events if e["event"].startswith("run.")] == [
        "run.created", "run.queued", "run.started", "run.succeeded",
    ]  # fmt: skip
    assert all(e["run_id"] == run_id and e["timestamp"].endswith("Z") for e in events)


def test_runs_and_an_alarm_survive_a_restart(api: Api) -> None:
    earlier = api.wait(api.create({"name": "echo"}))
    pending = api.create({"name": "echo", "delay": 45})
    api.stack.stop(SERVICE)
    started = time.monotonic()
    api.stack.start(SERVICE)
    api.stack.wait_ready(SERVICE, "/v1/health")
    restart = time.monotonic() - started
    assert api.get(earlier["id"]) == earlier  # D1 kept
    if restart < 40:  # else it may be due, even started, already
        assert api.get(pending)["status"] == "scheduled"
    run = api.wait(pending, timeout=90)  # the coordinator's alarm, kept in its storage, fires
    assert (run["status"], run["attempt"]) == ("succeeded", 1), run
    assert lateness_ms(run) >= 0
    record(f"delayed run (45 s) across a restart ({restart:.0f} s)", lateness_ms(run))


def test_a_limited_job_runs_one_at_a_time(api: Api) -> None:
    """`concurrency=1` on the Worker: the limiter in the coordinators' Durable Object class."""
    ids = [api.create({"name": "limited", "payload": {"seconds": 0.5}}) for _ in range(3)]
    runs = sorted((api.wait(i, timeout=90) for i in ids), key=lambda r: r["started_at"])
    assert [(r["status"], r["attempt"]) for r in runs] == [("succeeded", 1)] * 3
    for before, after in itertools.pairwise(runs):
        assert parse(after["started_at"]) >= parse(before["finished_at"])


def test_a_limited_jobs_slots_are_handed_over_two_at_a_time(api: Api) -> None:
    """`concurrency=2`, runs due at one instant: the two runs delivered together end in one
    turn, and their slots are released (and handed over) in one `limit_release_many`
    request, round after round. Every run runs once, never more than two at a time, and
    none waits for a lease to expire (a failed release would leave its slot until then)."""
    due = (datetime.now(UTC) + timedelta(seconds=3)).isoformat(timespec="milliseconds")
    due = due.replace("+00:00", "Z")
    runs = [{"name": "paired", "run_at": due} for _ in range(8)]
    status, created = request(f"{api.url}/v1/runs:batch", "POST", {"runs": runs})
    assert status == 202, created
    finished = [api.wait(item["kumofire_job_run_id"], timeout=60) for item in created["items"]]
    assert [(r["status"], r["attempt"]) for r in finished] == [("succeeded", 1)] * 8
    for run in finished:
        at = parse(run["started_at"])
        overlapping = [
            r for r in finished if parse(r["started_at"]) <= at < parse(r["finished_at"])
        ]
        assert len(overlapping) <= 2, finished
    last = max(parse(r["finished_at"]) for r in finished)
    assert (last - parse(due)).total_seconds() < LEASE_SECONDS, finished


def test_a_batch_of_due_limited_runs_is_placed_in_one_request(api: Api) -> None:
    """`concurrency=2`, a batch of runs due at once: their coordinators are armed parked, then
    one `limit_place_many` places them all (lists across Workers RPC), two are armed for now
    and the others wait in line and are handed over. Every run runs once, never more than
    two at a time."""
    logged_before = len(api.log())
    runs = [{"name": "paired"} for _ in range(6)]
    status, created = request(f"{api.url}/v1/runs:batch", "POST", {"runs": runs})
    assert status == 202, created
    finished = [api.wait(item["kumofire_job_run_id"], timeout=60) for item in created["items"]]
    assert [(r["status"], r["attempt"]) for r in finished] == [("succeeded", 1)] * 6
    for run in finished:
        at = parse(run["started_at"])
        overlapping = [
            r for r in finished if parse(r["started_at"]) <= at < parse(r["finished_at"])
        ]
        assert len(overlapping) <= 2, finished
    log = api.log()[logged_before:]
    assert "limit.place_failed" not in log, api.stack.tail(SERVICE)
    assert log.count("run.waiting") >= 4, api.stack.tail(SERVICE)


def test_a_paused_job_holds_its_runs_until_resumed(api: Api) -> None:
    """The job routes on the Worker (their `options` are `JobOptions.to_json`, msgspec's
    `to_builtins`): paused, runs wait `queued` with no attempt; resumed, they start one at a
    time, highest priority first."""
    status, jobs = request(f"{api.url}/v1/jobs")
    assert status == 200, jobs
    limited = next(job for job in jobs["items"] if job["name"] == "limited")
    assert limited["options"]["concurrency"] == 1 and limited["options"]["rate_limit"] is None
    status, job = request(f"{api.url}/v1/jobs/limited/pause", "POST")
    assert (status, job["paused"]) == (200, True), job
    try:
        ids = [
            api.create({"name": "limited", "payload": {"seconds": 0.3}, "priority": priority})
            for priority in (0, 9, 3)
        ]
        time.sleep(3)
        assert [(api.get(i)["status"], api.get(i)["attempt"]) for i in ids] == [("queued", 0)] * 3
        paused = api.rpc("get_job", "limited")
        assert paused["ok"] and paused["result"]["paused"] is True, paused
    finally:
        status, job = request(f"{api.url}/v1/jobs/limited/resume", "POST")
    assert (status, job["paused"]) == (200, False), job
    runs = sorted((api.wait(i, timeout=90) for i in ids), key=lambda r: r["started_at"])
    assert [(r["priority"], r["status"], r["attempt"]) for r in runs] == [
        (9, "succeeded", 1),
        (3, "succeeded", 1),
        (0, "succeeded", 1),
    ]
    for before, after in itertools.pairwise(runs):
        assert parse(after["started_at"]) >= parse(before["finished_at"])
    assert request(f"{api.url}/v1/jobs/nope") == (
        404,
        {"error": {"code": "not_found", "message": "job not found"}},
    )


def test_runs_delivered_in_one_batch_start_in_one_statement(api: Api) -> None:
    """Runs due at one instant: each queue batch that carries several starts them in one
    statement (one `started_at` per batch) and records their outcomes (and history)."""
    batches_before = len(queue_batches(api.log()))
    due = (datetime.now(UTC) + timedelta(seconds=3)).isoformat(timespec="milliseconds")
    due = due.replace("+00:00", "Z")
    runs = [{"name": "echo", "payload": {"n": n}, "run_at": due} for n in range(5)]
    status, created = request(f"{api.url}/v1/runs:batch", "POST", {"runs": runs})
    assert status == 202, created
    finished = [api.wait(item["kumofire_job_run_id"]) for item in created["items"]]
    assert [(r["status"], r["attempt"]) for r in finished] == [("succeeded", 1)] * 5
    batches = [total for _, total in queue_batches(api.log())[batches_before:]]
    assert sum(batches) == 5, batches
    assert len({r["started_at"] for r in finished}) <= len(batches), (batches, finished)
    status, attempts = request(f"{api.url}/v1/runs/{finished[0]['id']}/attempts")
    assert status == 200 and [a["outcome"] for a in attempts["items"]] == ["succeeded"]


def test_a_flow_parent_runs_once_its_children_have_finished(api: Api) -> None:
    children = [{"name": "slow", "payload": {"seconds": 1}}, {"name": "fatal"}, {"name": "flaky"}]
    expect = ["succeeded", "failed", "succeeded"]  # else the parent's handler fails
    status, flow = request(
        f"{api.url}/v1/flows", "POST",
        {"parent": {"name": "parent", "payload": {"expect": expect}}, "children": children},
    )  # fmt: skip
    assert status == 202, flow
    assert api.get(flow["parent_id"])["status"] == "waiting"
    # Waiting, the parent has no attempt in its history.
    assert request(f"{api.url}/v1/runs/{flow['parent_id']}/attempts") == (200, {"items": []})
    finished = [api.wait(child_id) for child_id in flow["children"]]
    assert [run["status"] for run in finished] == expect
    parent = api.wait(flow["parent_id"])
    assert (parent["status"], parent["attempt"]) == ("succeeded", 1), parent
    assert parent["result"] == [None, None, {"attempts": 1}]  # what each child returned
    assert parse(parent["started_at"]) >= max(parse(run["finished_at"]) for run in finished)
    status, page = request(f"{api.url}/v1/runs?parent_id={flow['parent_id']}")
    assert status == 200 and [r["id"] for r in page["items"]] == flow["children"][::-1]

    status, other = request(
        f"{api.url}/v1/flows", "POST",
        {"parent": {"name": "echo"}, "children": [{"name": "slow", "payload": {"seconds": 120}}]},
    )  # fmt: skip
    assert status == 202, other
    api.wait(other["children"][0], ("running",), timeout=30)
    status, canceled = request(f"{api.url}/v1/runs/{other['parent_id']}/cancel", "POST")
    assert status == 200 and canceled["status"] == "canceled", canceled
    assert api.get(other["children"][0])["status"] == "canceled"
    time.sleep(LEASE_SECONDS + 2)  # the child's handler is stopped; the parent never runs
    parent = api.get(other["parent_id"])
    assert (parent["status"], parent["attempt"]) == ("canceled", 0), parent
