"""`kumofire-jobs dev` as a user starts it, in a real process: what it says when the app, its
options or the config are wrong (one line and exit status 2, like a bad option; the user's own
traceback when their module raised), and `--synchronous FULL`."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dev_server import ROOT, DevServer

pytestmark = pytest.mark.slow

HANDLER = "from kumofire_jobs import JobOptions, create_runtime\n\nasync def h(ctx): pass\n\n"


def dev(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kumofire_jobs.cli", "dev", "--port", "0",
         "--data-dir", str(tmp_path / "data"), *args],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('runtime = create_runtime({"a/b": h})', "job name 'a/b' must not contain '/'"),
        ('runtime = create_runtime({"": h})', "job name '' must be a string of 1 to 256"),
        (f'runtime = create_runtime({{"{"x" * 257}": h}})', "must be a string of 1 to 256"),
        (
            'runtime = create_runtime({"a": h}, job_options={"a": JobOptions(concurrency=0)})',
            "JobOptions.concurrency must be at least 1",
        ),
        (
            'runtime = create_runtime({"a": h}, job_options={"b": JobOptions()})',
            "job_options names job 'b', which has no handler",
        ),
        ('def s(ctx): pass\nruntime = create_runtime({"a": s})',
         "the handler of job 'a' is not async"),
        ('runtime = create_runtime({"a": h}, lease_seconds=0)', "lease_seconds must be positive"),
        ("runtime = 3", "--app app.py:runtime: it is a int, not a runtime (create_runtime)"),
    ],
    ids=["slash", "empty", "too long", "option", "options of no job", "not async", "lease",
         "no runtime"],
)  # fmt: skip
def test_an_app_whose_configuration_is_refused_is_said_in_one_line(
    tmp_path: Path, source: str, message: str
) -> None:
    (tmp_path / "app.py").write_text(HANDLER + source + "\n")
    done = dev(tmp_path, "--app", "app.py:runtime")
    assert done.returncode == 2
    assert done.stderr.startswith("kumofire-jobs dev: error: --app app.py:runtime: ")
    assert message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "data").exists()  # refused before anything was opened


@pytest.mark.parametrize(
    ("args", "files", "message"),
    [
        (["--app", "absent.py:runtime"], {}, "--app absent.py:runtime: no such Python file"),
        (["--app", "absent:runtime"], {}, "could not import 'absent': No module named 'absent'"),
        (["--app", "app"], {}, "--app must look like MODULE:RUNTIME, got 'app'"),
        (["--app", "app.py:nope"], {"app.py": HANDLER}, "'app' has no attribute 'nope'"),
        ([], {"pyproject.toml": "[tool.kumofire-jobs]\napp = 3\n"}, "app must be a string"),
        (["--config", "w.toml"], {"w.toml": '[triggers]\ncrons = ["bad"]\n'},
         "--config w.toml: cron expression 'bad' must have 5 fields, has 1"),
        (["--config", "w.toml"], {"w.toml": "[triggers\n"}, "--config w.toml: not valid TOML"),
        (["--config", "absent.toml"], {}, "--config absent.toml: No such file or directory"),
        (["--service", "nonsense"], {}, "--service must look like BINDING=MODULE:CLASS"),
        (["--host", "192.0.2.1"], {},  # TEST-NET-1: never this machine's
         "cannot listen on 192.0.2.1:0: "),  # then the system's reason
        (["--config", "w.toml"], {"w.toml": '[vars]\nKUMOFIRE_REMOTE_HANDLERS = "{"\n'},
         "KUMOFIRE_REMOTE_HANDLERS is not valid JSON"),
        # Not a string: it was ignored, and the API served without a token.
        (["--config", "w.toml"], {"w.toml": "[vars]\nKUMOFIRE_API_TOKEN = 12345\n"},
         "KUMOFIRE_API_TOKEN in [vars] must be a string"),
    ],
    ids=["no file", "no module", "no attribute part", "no attribute", "pyproject", "cron",
         "toml", "no config", "service", "host", "routes", "token"],
)  # fmt: skip
def test_a_bad_argument_or_config_is_said_in_one_line(
    tmp_path: Path, args: list[str], files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    done = dev(tmp_path, *args)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("kumofire-jobs dev: error: ") and message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("source", "last"),
    [
        ("import json\n\nvalue = 1 / 0\n", "ZeroDivisionError: division by zero"),
        ("import not_a_module_anywhere_kj\n", "No module named 'not_a_module_anywhere_kj'"),
        ("def broken(:\n", "SyntaxError"),
    ],
    ids=["raises", "imports a missing module", "syntax"],
)
def test_an_app_that_raises_on_import_shows_its_own_traceback_then_one_line(
    tmp_path: Path, source: str, last: str
) -> None:
    (tmp_path / "app.py").write_text(source)
    done = dev(tmp_path, "--app", "app.py:runtime")
    assert done.returncode == 2
    *traceback, line = done.stderr.splitlines()
    assert traceback[0] == "Traceback (most recent call last):" or "SyntaxError" in last
    assert f'File "{tmp_path / "app.py"}", line ' in done.stderr  # where in the user's file
    assert "kumofire_jobs" not in "\n".join(traceback)  # only the user's frames
    assert "importlib" not in "\n".join(traceback)
    assert any(last in t for t in traceback)
    assert line.startswith("kumofire-jobs dev: error: --app app.py:runtime: importing 'app' ")


def test_a_port_in_use_is_said_in_one_line_before_anything_is_opened(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = dev(tmp_path, "--port", str(port))
    assert (done.returncode, done.stdout) == (1, "")  # not a usage error: the port is busy
    assert done.stderr == (
        f"kumofire-jobs dev: error: cannot listen on 127.0.0.1:{port}: the address is in use "
        "(give another --port, or --port 0 for any free one)\n"
    )
    assert not (tmp_path / "data").exists()


def test_help_lists_synchronous() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kumofire_jobs.cli", "dev", "--help"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    assert "--synchronous {NORMAL,FULL}" in done.stdout


def test_synchronous_is_refused_when_not_a_level(tmp_path: Path) -> None:
    done = dev(tmp_path, "--synchronous", "OFF")
    assert done.returncode == 2 and "argument --synchronous: invalid choice: 'OFF'" in done.stderr


@pytest.fixture
def servers() -> Iterator[list[DevServer]]:
    started: list[DevServer] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.stop(signal.SIGKILL)


PROBE = [sys.executable, "-m", "tests.support.dev_probe", "dev"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="the probe names fds by /proc")
@pytest.mark.parametrize("level", ["FULL", "full"])
def test_dev_at_full_syncs_the_wal_for_an_answer(
    tmp_path: Path, servers: list[DevServer], level: str
) -> None:
    """The embedded bindings' WAL sync at FULL is a Python call (SQLite's own syncs are not):
    a create answered over HTTP is followed by one, on the data directory's WAL."""
    server = DevServer(tmp_path / "data", "--synchronous", level, command=PROBE)
    servers.append(server)
    created = server.http.post("/v1/runs", json={"name": "hello"})
    assert created.status_code == 202
    assert str(tmp_path / "data" / "d1" / "jobs.sqlite-wal") in server.wait_for_line("fdatasync: ")
    assert server.stop(signal.SIGTERM) == 0
    assert server.listening.rstrip().endswith(f"(data in {tmp_path / 'data'}/, synchronous=FULL)")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="the probe names fds by /proc")
def test_dev_at_normal_never_syncs_the_wal(tmp_path: Path, servers: list[DevServer]) -> None:
    server = DevServer(tmp_path / "data", command=PROBE)
    servers.append(server)
    run_id = server.http.post("/v1/runs", json={"name": "hello"}).json()["kumofire_job_run_id"]
    server.wait_for(lambda: server.http.get(f"/v1/runs/{run_id}").json()["status"] == "succeeded")
    assert server.stop(signal.SIGTERM) == 0
    assert "run.succeeded" in server.output
    assert "fdatasync: " not in server.output
    assert server.listening.rstrip().endswith("synchronous=NORMAL)")


@pytest.mark.parametrize("command", ["dev", "migrate"])
def test_a_data_dir_that_is_a_file_is_said_in_one_line(tmp_path: Path, command: str) -> None:
    (tmp_path / "taken").write_text("not a directory\n")
    for data_dir, named in (("taken", "taken"), ("taken/inside", "taken")):
        done = subprocess.run(
            [sys.executable, "-m", "kumofire_jobs.cli", command, "--data-dir", data_dir],
            capture_output=True, text=True, cwd=tmp_path, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        assert done.stderr.splitlines()[-1] == (
            f"kumofire-jobs {command}: error: argument --data-dir: "
            f"{named} is a file, not a directory"
        )
    assert (tmp_path / "taken").read_text() == "not a directory\n"
