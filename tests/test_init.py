"""`kumofire-jobs init DIR`: the project it writes, run the way its README says: `kumofire-jobs
dev` serving its jobs, its own tests, and `kumofire-jobs cloudflare check`."""

from __future__ import annotations

import filecmp
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kumofire_jobs.cli import main
from kumofire_jobs.core.migrations import default_migrations_dir
from kumofire_jobs.core.runtime import Runtime
from kumofire_jobs.deploy.config import Severity, load_config, validate_config
from kumofire_jobs.deploy.scaffold import project_name
from kumofire_jobs.deploy.wrangler import DeployError
from kumofire_jobs.local.server import configured_app, load_runtime
from tests.support.deploy import WRANGLER, needs_wrangler

FILES = sorted(
    [
        ".gitignore",
        "README.md",
        "package.json",
        "pyproject.toml",
        "src/entry.py",
        "src/jobs.py",
        "tests/conftest.py",
        "tests/test_jobs.py",
        "wrangler.toml",
        *(f"migrations/{m.name}" for m in default_migrations_dir().glob("*.sql")),
    ]
)


def init(tmp_path: Path, name: str = "my-app") -> Path:
    project = tmp_path / name
    assert main(["init", str(project)]) == 0
    return project


@pytest.fixture
def clean_imports() -> Iterator[None]:
    """`load_runtime` imports the project's `jobs` module and puts src/ on sys.path: undone."""
    path = list(sys.path)
    yield
    sys.path[:] = path
    sys.modules.pop("jobs", None)


def test_init_writes_the_project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = init(tmp_path)
    written = sorted(p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file())
    assert written == FILES
    for migration in default_migrations_dir().glob("*.sql"):
        assert filecmp.cmp(migration, project / "migrations" / migration.name, shallow=False)
    out = capsys.readouterr().out
    assert f"cd {project}" in out and "kumofire-jobs dev" in out
    assert "{{" not in "".join(p.read_text() for p in project.rglob("*") if p.is_file())


def test_the_wrangler_config_has_what_the_runtime_needs(tmp_path: Path) -> None:
    project = init(tmp_path)
    config = load_config(project / "wrangler.toml")
    problems = validate_config(config)
    # Only the database id is left to the user (`wrangler d1 create` prints it).
    assert [(p.severity, p.code) for p in problems] == [(Severity.WARNING, "d1-database-id")]
    data = config.data
    assert data["name"] == "my-app"
    assert data["queues"]["consumers"][0]["dead_letter_queue"] == "my-app-jobs-dlq"
    assert data["durable_objects"]["bindings"][0]["class_name"] == "JobCoordinator"
    assert data["triggers"]["crons"] == ["* * * * *"]


def test_the_project_depends_on_kumofire_jobs(tmp_path: Path) -> None:
    project = init(tmp_path)
    with (project / "pyproject.toml").open("rb") as file:
        pyproject = tomllib.load(file)
    assert pyproject["project"]["name"] == "my-app"
    assert pyproject["project"]["dependencies"] == ["kumofire-jobs>=0.1.0"]
    # This environment has kumofire-jobs from this repository, not an index: pywrangler is
    # told where, non-editable.
    sources = pyproject["tool"]["uv"]["sources"]
    assert sources["kumofire-jobs"]["editable"] is False
    assert Path(sources["kumofire-coordinator"]["path"]).name == "coordinator"


def test_dev_serves_the_runtime_the_project_names(
    tmp_path: Path, clean_imports: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = init(tmp_path)
    spec = configured_app(project / "pyproject.toml")
    assert spec == "src/jobs.py:runtime"
    monkeypatch.chdir(project)
    runtime = load_runtime(spec)
    assert isinstance(runtime, Runtime)
    assert sorted(runtime.handlers) == ["cleanup", "send_email"]
    assert sys.modules["jobs"].runtime is runtime  # imported by its name, as the tests do


def test_an_app_given_as_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no such Python file"):
        load_runtime(f"{tmp_path / 'absent.py'}:runtime")


def test_a_pyproject_without_the_table_gives_the_demo(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n', encoding="utf-8")
    assert configured_app(tmp_path / "pyproject.toml") is None
    assert configured_app(tmp_path / "absent.toml") is None
    (tmp_path / "pyproject.toml").write_text("[tool.kumofire-jobs]\napp = 3\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="must be a string"):
        configured_app(tmp_path / "pyproject.toml")


def test_init_refuses_a_directory_with_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mine.txt").write_text("keep", encoding="utf-8")
    assert main(["init", str(tmp_path)]) == 1
    assert "exists and is not an empty directory" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


@pytest.mark.parametrize("where", ["a-file/app", "/proc/nope"])
def test_init_where_no_directory_can_be_made_says_so_in_one_line(
    tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if where.startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    (tmp_path / "a-file").write_text("not a directory", encoding="utf-8")
    target = where if where.startswith("/") else str(tmp_path / where)
    assert main(["init", target]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kumofire-jobs init: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and target.rsplit("/", 1)[0] in err


def test_init_quotes_a_directory_for_the_shell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init(tmp_path, "bad name!")
    out = capsys.readouterr().out
    assert f"cd '{tmp_path / 'bad name!'}'" in out


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_dev_refuses_a_port_that_is_no_port(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["dev", "--port", port])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --port" in err and "Traceback" not in err


def test_names_are_made_wrangler_names() -> None:
    assert project_name("My App_2") == "my-app-2"
    assert project_name("x" * 80) == "x" * 63
    with pytest.raises(DeployError, match="--name"):
        project_name("2fast")


@pytest.mark.slow
def test_dev_runs_the_project_and_serves_its_jobs(tmp_path: Path) -> None:
    project = init(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "kumofire_jobs.cli", "dev", "--port", "0"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("  jobs ("):
                break
        output = "".join(lines)
        url = re.search(r"listening on (http://\S+)", output)
        assert url is not None, output
        assert "  jobs (src/jobs.py:runtime): cleanup, send_email\n" in lines
        with httpx.Client(base_url=url.group(1), timeout=5) as http:
            created = http.post("/v1/runs", json={"name": "send_email", "payload": {"to": "a@b"}})
            assert created.status_code == 202, created.text
            run_id = created.json()["kumofire_job_run_id"]
            deadline = time.monotonic() + 30  # a real process: polled, with a deadline
            run = http.get(f"/v1/runs/{run_id}").json()
            while run["status"] != "succeeded" and time.monotonic() < deadline:
                time.sleep(0.05)
                run = http.get(f"/v1/runs/{run_id}").json()
            assert run["status"] == "succeeded", run
        assert (project / ".kumofire").is_dir()  # its data in the project, as the README says
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.slow
def test_the_generated_tests_pass(tmp_path: Path) -> None:
    project = init(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout, done.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
@needs_wrangler
def test_cloudflare_check_passes_on_the_project(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = init(tmp_path)
    capsys.readouterr()
    # The repository's wrangler stands in for the project's `npm install`.
    (project / "node_modules").symlink_to(WRANGLER.parent.parent, target_is_directory=True)
    code = main(["cloudflare", "check", "--config", str(project / "wrangler.toml")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.splitlines()[-1].startswith("ok: the Worker bundle is complete: ")
    assert "2 uploaded from the directory of main" in out  # entry.py and jobs.py
