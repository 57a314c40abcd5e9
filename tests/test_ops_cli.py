"""The ops commands (`kumofire-jobs runs|schedules|jobs ...`) against a real `kumofire-jobs
dev` process with a token, over real HTTP: tables, `--json` (the API's own JSON), every
subcommand, and the exit codes and messages of errors (docs/cli.md).

The commands run in-process (`cli.main`, output captured) except where the process itself is
the point: the installed entry point's exit code when no server listens, and a 404.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import quote

import pytest

from kumofire_jobs import UnknownJobError
from kumofire_jobs.cli import main
from kumofire_jobs.http import HttpJobsClient, HttpJobsError
from tests.support.dev_server import ROOT, DevServer

pytestmark = pytest.mark.slow

TOKEN = "ops-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with mock.patch.dict(os.environ, {"KUMOFIRE_API_TOKEN": TOKEN}):
        started = DevServer(tmp_path_factory.mktemp("ops") / "data")
    started.http.headers["authorization"] = f"Bearer {TOKEN}"
    yield started
    if started.process.poll() is None:
        started.stop(signal.SIGKILL)


class Cli:
    def __init__(self, server: DevServer, capsys: pytest.CaptureFixture[str]) -> None:
        self.server = server
        self.capsys = capsys

    def __call__(self, *argv: str, token: str | None = TOKEN) -> tuple[int, str, str]:
        """`kumofire-jobs ARGV --url URL [--token TOKEN]`: exit code, stdout, stderr."""
        given = ["--url", self.server.url, *(["--token", token] if token else [])]
        self.capsys.readouterr()
        code = main([*argv, *given])
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *argv: str) -> str:
        code, out, err = self(*argv)
        assert (code, err) == (0, ""), (argv, out)
        return out

    def json(self, *argv: str) -> Any:
        return json.loads(self.ok(*argv, "--json"))

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.server.http.request(method, path, **kwargs)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def create(self, name: str, **fields: Any) -> str:
        run_id: str = self.api("POST", "/v1/runs", json={"name": name, **fields})[
            "kumofire_job_run_id"
        ]
        return run_id

    def settled(self, run_id: str, status: str) -> dict[str, Any]:
        return self.server.wait_for(  # type: ignore[no-any-return]
            lambda: (run := self.api("GET", f"/v1/runs/{run_id}"))["status"] == status and run
        )


@pytest.fixture
def cli(server: DevServer, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(server, capsys)


def rows(table: str) -> list[list[str]]:
    """A table's rows (the header first), split on the runs of spaces between columns."""
    return [
        [cell.strip() for cell in line.split("  ") if cell.strip()]
        for line in table.strip().splitlines()
    ]


# --- runs -------------------------------------------------------------------------------------


def test_runs_list_as_a_table_and_as_the_api_s_json(cli: Cli) -> None:
    done = cli.create("hello", payload={"n": 1})
    failed = cli.create("fail", max_attempts=1)
    later = cli.create("hello", delay=3600)
    cli.settled(done, "succeeded")
    cli.settled(failed, "failed")

    table = rows(cli.ok("runs", "list"))
    assert table[0] == [
        "ID", "JOB", "STATUS", "ATTEMPT", "SCHEDULED FOR", "FINISHED", "LAST ERROR",
    ]  # fmt: skip
    by_id = {row[0]: row for row in table[1:]}
    assert by_id[later][1:4] == ["hello", "scheduled", "0/3"]  # ids whole, as the API's
    assert by_id[failed][1:4] == ["fail", "failed", "1/1"]
    assert by_id[failed][-1] == "RuntimeError: this job always fails"
    assert by_id[done][2] == "succeeded"
    assert by_id[done][5].endswith("Z") and len(by_id[done][5]) == len("2026-12-07 13:00:05Z")

    assert cli.json("runs", "list") == cli.api("GET", "/v1/runs")
    only = cli.json("runs", "list", "--status", "failed", "--name", "fail", "--limit", "1")
    assert [run["id"] for run in only["items"]] == [failed]

    first = cli.ok("runs", "list", "--limit", "1")
    assert rows(first)[1][0] == max(by_id)  # newest first
    cursor = first.strip().splitlines()[-1].removeprefix("(more: --cursor ").removesuffix(")")
    second = cli.json("runs", "list", "--limit", "1", "--cursor", cursor)
    assert second == cli.api("GET", "/v1/runs", params={"limit": 1, "cursor": cursor})


def test_a_flows_runs_listed_by_parent_and_canceled_with_it(cli: Cli) -> None:
    later = {"name": "hello", "delay": 3600}
    flow = cli.api("POST", "/v1/flows", json={"parent": {"name": "hello"}, "children": [later] * 2})
    table = rows(cli.ok("runs", "list", "--parent-id", flow["parent_id"]))
    assert [(row[0], row[2]) for row in table[1:]] == [
        (child, "scheduled") for child in flow["children"][::-1]
    ]
    waiting = rows(cli.ok("runs", "list", "--status", "waiting"))
    assert [row[:3] for row in waiting[1:]] == [[flow["parent_id"], "hello", "waiting"]]
    assert cli.json("runs", "cancel", flow["parent_id"])["status"] == "canceled"
    children = cli.json("runs", "list", "--parent-id", flow["parent_id"])["items"]
    assert [run["status"] for run in children] == ["canceled", "canceled"]


def test_runs_get_cancel_retry_promote_delete(cli: Cli) -> None:
    later = cli.create("hello", payload={"to": "x"}, delay=3600)
    shown = cli.ok("runs", "get", later)
    assert f"id               {later}" in shown
    assert '"to": "x"' in shown and "status           scheduled" in shown
    assert cli.json("runs", "get", later) == cli.api("GET", f"/v1/runs/{later}")

    canceled = rows(cli.ok("runs", "cancel", later))
    assert canceled[1][:3] == [later, "hello", "canceled"]
    retried = cli.json("runs", "retry", later)
    assert (retried["status"], retried["max_attempts"]) == ("scheduled", 4)

    again = cli.create("hello", delay=3600)
    promoted = cli.json("runs", "promote", again)
    assert promoted["status"] == "scheduled" and promoted["scheduled_for"] < "2100"
    cli.settled(again, "succeeded")

    assert cli.ok("runs", "delete", again).strip() == f"deleted {again}"
    cli.settled(later, "succeeded")
    assert cli.json("runs", "delete", later) == {"id": later, "deleted": True}

    # The API's refusals: exit 1, its code and message on stderr, nothing on stdout.
    pending = cli.create("hello", delay=3600)
    code, out, err = cli("runs", "delete", pending)
    message = cli.server.http.delete(f"/v1/runs/{pending}").json()["error"]["message"]
    assert (code, out, err) == (1, "", f"kumofire-jobs: conflict: {message}\n")
    code, out, err = cli("runs", "get", again)
    assert (code, out, err) == (1, "", f"kumofire-jobs: not_found: run {again} not found\n")
    code, _, err = cli("runs", "list", "--limit", "500")
    assert (code, err) == (1, "kumofire-jobs: validation_error: limit must be between 1 and 200\n")
    code, _, err = cli("runs", "list", "--status", "done")
    assert code == 1 and err.startswith("kumofire-jobs: validation_error: status must be one of")


def test_runs_attempts_and_logs(cli: Cli) -> None:
    flaky = cli.create("flaky")
    cli.settled(flaky, "succeeded")  # the retry comes after the demo's 1 s backoff
    table = rows(cli.ok("runs", "attempts", flaky))
    assert table[0] == ["ATTEMPT", "OUTCOME", "STARTED", "FINISHED", "DURATION", "ERROR"]
    assert [row[:2] for row in table[1:]] == [["1", "retried"], ["2", "succeeded"]]
    assert table[1][-1] == "RuntimeError: the first attempt of a flaky job fails"
    assert table[2][-1] == "-" and table[2][4].endswith("s")
    attempts = cli.json("runs", "attempts", flaky)
    assert attempts == cli.api("GET", f"/v1/runs/{flaky}/attempts")
    assert "Traceback" in attempts["items"][0]["error"]  # --json keeps the whole error

    hello = cli.create("hello", payload={"to": "x"})
    cli.settled(hello, "succeeded")
    logs = rows(cli.ok("runs", "logs", hello))
    assert logs[0] == ["AT", "ATTEMPT", "LEVEL", "EVENT", "FIELDS"]
    assert [row[1:] for row in logs[1:]] == [["1", "info", "hello", 'payload={"to": "x"}']]
    assert cli.json("runs", "logs", hello) == cli.api("GET", f"/v1/runs/{hello}/logs")
    for action in ("attempts", "logs"):
        code, out, err = cli("runs", action, "run_nope")
        assert (code, out, err) == (1, "", "kumofire-jobs: not_found: run run_nope not found\n")


def test_control_characters_a_caller_chose_reach_the_terminal_escaped(cli: Cli) -> None:
    # Found by outside testing: a dedupe key with an escape sequence, printed raw by
    # `runs get`, set the operator's terminal title; a line break in a key faked a table row.
    title = "\x1b]0;pwned\x07"
    sneaky = cli.create(
        "hello", delay=3600, dedupe_key=f"k{title}", concurrency_key="a\nrun_fake  hello  x",
        payload={"c1": "\x9b2J", "del": "\x7f"},
    )  # fmt: skip
    key = "\x1b[2Jkey"
    cli.api("PUT", f"/v1/schedules/by-key/{quote(key)}", json={"name": "hello", "every": 600})
    outputs = [
        cli.ok("runs", "get", sneaky),
        cli.ok("runs", "list"),
        cli.ok("schedules", "list"),
        cli.ok("runs", "get", sneaky, "--json"),
    ]
    for out in outputs:
        assert not any(ch in out for ch in "\x1b\x07\x9b\x7f"), out
    assert "k\\u001b]0;pwned\\u0007" in outputs[0]
    assert "\\u001b[2Jkey" in outputs[2]
    assert not any(row[0] == "run_fake" for row in rows(outputs[1]))
    # The JSON is still the API's, the characters escaped as JSON escapes them.
    assert json.loads(outputs[3]) == cli.api("GET", f"/v1/runs/{sneaky}")
    cli.api("DELETE", f"/v1/schedules/by-key/{quote(key)}")
    code, out, err = cli("schedules", "get", key, "--key")  # the message names the key
    assert (code, out) == (1, "") and "\x1b" not in err and "\\u001b[2Jkey" in err


# --- schedules --------------------------------------------------------------------------------


def test_schedules_list_get_enable_disable_delete(cli: Cli) -> None:
    body = {"name": "hello", "cron": "0 9 * * *", "key": "daily", "timezone": "Asia/Tokyo"}
    daily = cli.api("POST", "/v1/schedules", json=body)
    every = cli.api("POST", "/v1/schedules", json={"name": "hello", "every": 3600, "limit": 5})
    table = rows(cli.ok("schedules", "list"))
    assert table[0] == [
        "ID", "KEY", "JOB", "TIMING", "ENABLED", "NEXT RUN", "LAST SCHEDULED", "COUNT",
    ]  # fmt: skip
    by_id = {row[0]: row for row in table[1:]}
    assert by_id[daily["id"]][1:5] == ["daily", "hello", "0 9 * * * (Asia/Tokyo)", "yes"]
    assert by_id[every["id"]][1:5] == ["-", "hello", "every 3600s", "yes"]
    assert by_id[every["id"]][-1] == "0/5"
    assert cli.json("schedules", "list") == cli.api("GET", "/v1/schedules")

    assert cli.json("schedules", "get", daily["id"]) == daily
    shown = cli.ok("schedules", "get", "daily", "--key")
    assert f"id                 {daily['id']}" in shown and "timezone           Asia/Tokyo" in shown
    disabled = rows(cli.ok("schedules", "disable", "daily", "--key"))
    assert disabled[1][0] == daily["id"] and disabled[1][4] == "no" and disabled[1][5] == "-"
    assert cli.json("schedules", "list", "--enabled", "false")["items"][0]["id"] == daily["id"]
    assert cli.json("schedules", "enable", daily["id"])["enabled"] is True
    assert cli.ok("schedules", "delete", daily["id"]).strip() == f"deleted schedule {daily['id']}"
    assert cli.json("schedules", "delete", every["id"]) == {"id": every["id"], "deleted": True}
    code, out, err = cli("schedules", "get", "daily", "--key")
    assert (code, out) == (1, "")
    assert err == "kumofire-jobs: not_found: schedule with key daily not found\n"


# --- jobs -------------------------------------------------------------------------------------


def test_jobs_list_get_pause_resume(cli: Cli) -> None:
    table = rows(cli.ok("jobs", "list"))
    assert table[0][:4] == ["NAME", "PAUSED", "WAITING", "SCHEDULED"] and "FAILED" in table[0]
    assert [row[0] for row in table[1:]] == ["fail", "flaky", "hello", "slow"]
    assert cli.json("jobs", "list") == cli.api("GET", "/v1/jobs")
    paused = rows(cli.ok("jobs", "pause", "slow"))
    assert paused[1][:2] == ["slow", "yes"]
    assert cli.json("jobs", "get", "slow")["paused"] is True
    resumed = cli.json("jobs", "resume", "slow")
    assert resumed == cli.api("GET", "/v1/jobs/slow") and resumed["paused"] is False
    code, out, err = cli("jobs", "pause", "nope")
    assert (code, out, err) == (1, "", "kumofire-jobs: not_found: job nope not found\n")


def test_docs_cli_md_example_prints_what_the_commands_print(cli: Cli) -> None:
    # docs/cli.md's console example: each command's table has the columns the doc shows, and
    # an error the doc's line, exit status included.
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    console = text.split("```console\n", 1)[1].split("```", 1)[0]
    shown: dict[str, list[str]] = {}
    for line in console.splitlines():
        if line.startswith("$ "):
            command = line[2:].split(";")[0]
            shown[command] = []
        else:
            shown[command].append(line)
    failed = cli.create("fail", max_attempts=1)
    cli.settled(failed, "failed")
    for command, lines in shown.items():
        argv = command.split()[1:]
        if argv[:2] == ["runs", "retry"]:
            argv[2] = failed
        assert lines, f"docs/cli.md shows nothing printed by {command!r}"
        code, out, err = cli(*argv)
        if argv[:2] == ["runs", "get"]:
            assert (code, out, err) == (int(lines[1]), "", lines[0] + "\n")
            continue
        assert (code, err) == (0, ""), command
        assert rows(out)[0] == rows(lines[0])[0], command
        assert len(rows(out)[1]) == len(rows(lines[1])[0]), command
    cli.ok("jobs", "resume", "slow")


# --- HttpJobsClient itself against the process ------------------------------------------------


async def test_http_jobs_client_against_the_dev_server(server: DevServer) -> None:
    async with HttpJobsClient(server.url, TOKEN) as jobs:
        created = await jobs.create("hello", {"to": "dev"}, max_attempts=2)
        run = await jobs.get(created.kumofire_job_run_id)
        assert run is not None and run.payload == {"to": "dev"} and run.max_attempts == 2
        assert [job.name for job in await jobs.list_jobs()] == ["fail", "flaky", "hello", "slow"]
        assert await jobs.get("run_nope") is None
        with pytest.raises(UnknownJobError, match="nope"):
            await jobs.create("nope")
    async with HttpJobsClient(server.url) as anonymous:
        with pytest.raises(HttpJobsError) as refused:
            await anonymous.counts()
        assert (refused.value.status, refused.value.code) == (401, "unauthorized")


# --- the token, no server, usage ------------------------------------------------------------


def test_the_token_from_the_option_or_the_environment(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUMOFIRE_API_TOKEN", raising=False)
    code, out, err = cli("runs", "list", token=None)
    assert (code, out) == (1, "")
    assert err == (
        "kumofire-jobs: unauthorized: a valid bearer token is required "
        "(give --token or set $KUMOFIRE_API_TOKEN)\n"
    )
    code, _, err = cli("jobs", "list", token="wrong")
    assert code == 1 and "unauthorized" in err
    monkeypatch.setenv("KUMOFIRE_API_TOKEN", TOKEN)
    code, out, _ = cli("jobs", "list", token=None)
    assert code == 0 and out.startswith("NAME")


@pytest.mark.parametrize("token", ["a\nb", " "])
def test_a_token_no_header_can_carry_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], token: str
) -> None:
    # It was reported as an unreachable service (exit 3), or a traceback for a non-ASCII one
    # (which is now sent as UTF-8); no request is made.
    assert main(["runs", "list", "--url", "http://127.0.0.1:9", "--token", token]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kumofire-jobs: --token (or $KUMOFIRE_API_TOKEN): the token must be")


@pytest.mark.parametrize("suffix", ["/ui/", "/v1", "?page=1"])
def test_a_url_that_is_not_the_service_s_root_says_so(
    server: DevServer, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    # The commands add their routes to --url: one with a path or a query reached no route,
    # said only as "not_found: no such route".
    code = main(["jobs", "list", "--url", server.url + suffix, "--token", TOKEN])
    err = capsys.readouterr().err
    assert code == 1
    assert err == (
        "kumofire-jobs: not_found: no such route (give --url the service's root, "
        f"such as {server.url}, with no path or query)\n"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def command(*argv: str) -> subprocess.CompletedProcess[str]:
    """The real `kumofire-jobs` process."""
    return subprocess.run(
        [sys.executable, "-m", "kumofire_jobs.cli", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_no_server_exits_3_with_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = command("runs", "list", "--url", url)
    assert (done.returncode, done.stdout) == (3, "")
    assert done.stderr == (
        f"kumofire-jobs: cannot reach the service at {url}: "
        "connection refused (is the service running?)\n"
    )


def test_a_missing_run_exits_1_from_the_process(server: DevServer) -> None:
    done = command("runs", "get", "run_nope", "--url", server.url, "--token", TOKEN)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "kumofire-jobs: not_found: run run_nope not found\n"


def test_a_reader_that_stops_early_ends_the_command_quietly(server: DevServer) -> None:
    """`runs list --json | head`: the pipe closed before (or while) the command writes ends
    it with 141, as a shell reports SIGPIPE, and nothing on stderr (no BrokenPipeError)."""
    for argv in (["runs", "list", "--json", "--limit", "200"], ["jobs", "list"]):
        read, write = os.pipe()
        os.close(read)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "kumofire_jobs.cli", *argv, "--url", server.url,
                 "--token", TOKEN],
                cwd=ROOT, stdout=write, stderr=subprocess.PIPE, text=True, timeout=60,
            )  # fmt: skip
        finally:
            os.close(write)
        assert (done.returncode, done.stderr) == (141, ""), argv


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["runs"], ["runs", "list", "--limit", "x"], ["runs", "get"], ["jobs", "stop"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2, argv
    assert main(["runs", "list", "--url", "ftp://example.com"]) == 2
    assert "is not an http(s) URL" in capsys.readouterr().err


def test_an_errors_summary_names_its_class_without_the_module() -> None:
    from kumofire_jobs.ops.commands import _last_line

    traceback = (
        "Traceback (most recent call last):\n"
        '  File "app.py", line 6, in send_email\n'
        "    raise NonRetryableError(\"no 'to'\")\n"
        "kumofire_jobs.core.errors.NonRetryableError: no 'to': see a.b.C\n"
    )
    assert _last_line(traceback) == "NonRetryableError: no 'to': see a.b.C"
    assert _last_line("my_app.jobs.Quota") == "Quota"  # an exception without a message
    assert (
        _last_line("RuntimeError: this job always fails") == "RuntimeError: this job always fails"
    )
    assert _last_line("config.toml: no such file") == "config.toml: no such file"  # not a class
    assert _last_line("cut off: the lease expired") == "cut off: the lease expired"
    assert _last_line(None) is None


def test_without_httpx_the_hint_names_an_install_that_brings_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with mock.patch.dict(sys.modules, {"httpx": None}):  # `import httpx` raises ImportError
        code = main(["runs", "list", "--url", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "need httpx" in err and "pip install 'kumofire-jobs[local]'" in err
    assert "uv sync" in err  # in a clone, where the environment has no pip
