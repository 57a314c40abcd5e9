"""Locating wrangler, and the errors of `cloudflare migrate` before and around it (with a
stand-in wrangler that records how it is called)."""

from __future__ import annotations

import json
import shutil
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from kumofire_jobs.cli import main
from kumofire_jobs.deploy.migrate import parse_migration_names
from kumofire_jobs.deploy.wrangler import (
    DeployError,
    Wrangler,
    WranglerNotFoundError,
    find_wrangler,
    wrangler_env,
)
from tests.support.deploy import REPO


def executable(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\n{textwrap.dedent(body)}", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def test_the_projects_own_wrangler_is_found_from_the_config_upward(tmp_path: Path) -> None:
    binary = executable(tmp_path / "node_modules" / ".bin" / "wrangler", "")
    project = tmp_path / "services" / "jobs"
    project.mkdir(parents=True)
    path_dir = tmp_path / "path"
    executable(path_dir / "wrangler", "")  # on PATH, but the project's comes first
    assert find_wrangler(project, path=str(path_dir)) == Wrangler((str(binary),))
    nearer = executable(project / "node_modules" / ".bin" / "wrangler", "")
    assert find_wrangler(project, path=str(path_dir)) == Wrangler((str(nearer),))


def test_then_wrangler_on_path(tmp_path: Path) -> None:
    on_path = executable(tmp_path / "bin" / "wrangler", "")
    project = tmp_path / "project"
    project.mkdir()
    assert find_wrangler(project, path=str(tmp_path / "bin")) == Wrangler((str(on_path),))


def test_then_npx_when_it_has_a_wrangler(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    bin_dir = tmp_path / "bin"
    npx = executable(
        bin_dir / "npx",
        """\
        import sys
        sys.exit(0 if sys.argv[1:] == ["--no-install", "wrangler", "--version"] else 3)
        """,
    )
    assert find_wrangler(project, path=str(bin_dir)) == Wrangler(
        (str(npx), "--no-install", "wrangler")
    )


def test_no_wrangler_anywhere_says_how_to_install_it(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    bin_dir = tmp_path / "bin"
    executable(bin_dir / "npx", "import sys\nsys.exit(1)\n")  # npm knows no wrangler
    with pytest.raises(WranglerNotFoundError) as raised:
        find_wrangler(project, path=str(bin_dir))
    message = str(raised.value)
    assert "wrangler not found" in message
    assert "`npm install`" in message and "`npm i -D wrangler`" in message
    with pytest.raises(WranglerNotFoundError):
        find_wrangler(project, path=str(tmp_path / "empty"))


def test_the_repository_wrangler_is_the_one_found() -> None:
    if not (REPO / "node_modules" / ".bin" / "wrangler").exists():
        pytest.skip("wrangler is not installed: run `npm install` at the repository root")
    found = find_wrangler(REPO / "src")
    assert found.command == (str(REPO / "node_modules" / ".bin" / "wrangler"),)


def test_wrangler_runs_without_prompts_metrics_or_colors(tmp_path: Path) -> None:
    env = wrangler_env({"PATH": "/bin", "CI": "false"}, state_dir=tmp_path)
    assert env["CI"] == "true" and env["WRANGLER_SEND_METRICS"] == "false"
    assert env["WRANGLER_HIDE_BANNER"] == "true" and env["NO_COLOR"] == "1"
    assert env["XDG_CONFIG_HOME"] == str(tmp_path / "config")
    assert env["WRANGLER_LOG_PATH"] == str(tmp_path / "logs")
    assert "XDG_CONFIG_HOME" not in wrangler_env({"PATH": "/bin"})


def test_a_wrangler_that_cannot_start_is_a_deploy_error(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="npm i -D wrangler"):
        Wrangler((str(tmp_path / "gone"),)).run(["--version"], cwd=tmp_path)


# --- cloudflare migrate: what is checked before wrangler runs -----------------------------------


def project(tmp_path: Path, *, wrangler: bool = True) -> Path:
    root = tmp_path / "project"
    shutil.copytree(REPO / "migrations", root / "migrations")
    shutil.copy(REPO / "wrangler.toml", root / "wrangler.toml")
    if wrangler:
        # A stand-in wrangler: records its arguments, answers like wrangler 4.
        executable(
            root / "node_modules" / ".bin" / "wrangler",
            f"""\
            import json, os, sys
            with open({str(root / "calls.jsonl")!r}, "a") as log:
                log.write(json.dumps({{"argv": sys.argv[1:], "ci": os.environ.get("CI")}}) + "\\n")
            if sys.argv[1:4] == ["d1", "migrations", "list"]:
                print("Migrations to be applied:")
                print("│ Name               │")
                print("│ 0001_job_runs.sql  │")
                print("│ 0002_schedules.sql │")
            elif os.environ.get("FAIL_APPLY"):
                print("│ 0001_job_runs.sql  │ ❌     │")
                print("✘ [ERROR] near 'CREAT': syntax error")
                sys.exit(1)
            """,
        )
    return root


def migrate(root: Path, *args: str) -> int:
    return main(["cloudflare", "migrate", *args, "--config", str(root / "wrangler.toml")])


def calls(root: Path) -> list[dict[str, object]]:
    path = root / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_migrate_without_wrangler_fails_saying_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = project(tmp_path, wrangler=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code = migrate(root, "--local", "--database", "kumofire-jobs")
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("kumofire-jobs cloudflare migrate: error: wrangler not found")
    assert "`npm install`" in err and "`npm i -D wrangler`" in err


def test_migrate_names_the_databases_when_the_one_asked_for_is_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = project(tmp_path)
    code = migrate(root, "--remote", "--database", "jobs")
    assert code == 1
    err = capsys.readouterr().err
    assert "no D1 database named 'jobs'" in err
    assert "the databases there are: kumofire-jobs (binding JOBS_DB)" in err
    assert calls(root) == []  # checked before wrangler ran


def test_migrate_without_a_config_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["cloudflare", "migrate", "--local", "--database", "kumofire-jobs"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"no wrangler config at {tmp_path / 'wrangler.toml'}" in err
    assert "--config FILE" in err


def test_migrate_without_the_migrations_directory_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = project(tmp_path)
    shutil.rmtree(root / "migrations")
    code = migrate(root, "--local", "--database", "kumofire-jobs")
    assert code == 1
    assert "migrations directory of 'kumofire-jobs' does not exist" in capsys.readouterr().err
    assert calls(root) == []


def test_persist_to_is_for_local_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path)
    code = migrate(root, "--remote", "--database", "kumofire-jobs", "--persist-to", str(tmp_path))
    assert code == 1
    assert "--persist-to applies to --local only" in capsys.readouterr().err


def test_local_or_remote_must_be_chosen(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["cloudflare", "migrate", "--database", "kumofire-jobs"])
    assert exited.value.code == 2
    assert "one of the arguments --local --remote is required" in capsys.readouterr().err


# --- cloudflare migrate: how wrangler is driven ------------------------------------------------


def test_dry_run_lists_through_wrangler_and_applies_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = project(tmp_path)
    state = tmp_path / "state"
    code = migrate(
        root, "--local", "--database", "JOBS_DB", "--dry-run", "--persist-to", str(state)
    )
    assert code == 0
    assert capsys.readouterr().out == (
        "Pending migrations on kumofire-jobs (local):\n"
        "  0001_job_runs.sql\n"
        "  0002_schedules.sql\n"
        "Dry run: nothing applied (2 pending).\n"
    )
    assert calls(root) == [
        {
            "argv": ["d1", "migrations", "list", "kumofire-jobs", "--local",
                     "--persist-to", str(state), "--config", str(root / "wrangler.toml")],
            "ci": "true",
        }
    ]  # fmt: skip


def test_apply_runs_wranglers_apply_after_listing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = project(tmp_path)
    code = migrate(root, "--remote", "--database", "kumofire-jobs")
    assert code == 0
    out = capsys.readouterr().out
    assert out.endswith("Applied 2 migration(s) to kumofire-jobs (remote).\n")
    config = str(root / "wrangler.toml")
    assert [c["argv"] for c in calls(root)] == [
        ["d1", "migrations", "list", "kumofire-jobs", "--remote", "--config", config],
        ["d1", "migrations", "apply", "kumofire-jobs", "--remote", "--config", config],
    ]


def test_a_failing_apply_shows_wranglers_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = project(tmp_path)
    monkeypatch.setenv("FAIL_APPLY", "1")
    code = migrate(root, "--local", "--database", "kumofire-jobs")
    assert code == 1
    err = capsys.readouterr().err
    assert "`wrangler d1 migrations apply kumofire-jobs --local" in err
    assert "failed (exit 1)" in err and "syntax error" in err


def test_the_default_config_is_the_current_directorys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = project(tmp_path)
    monkeypatch.chdir(root)
    assert main(["cloudflare", "migrate", "--local", "--database", "kumofire-jobs",
                 "--dry-run"]) == 0  # fmt: skip
    assert calls(root)[0]["argv"][-2:] == ["--config", str(root / "wrangler.toml")]  # type: ignore[index]


LIST_OUTPUT = """\
Resource location: local

Migrations to be applied:
┌────────────────────┐
│ Name               │
├────────────────────┤
│ 0001_job_runs.sql  │
├────────────────────┤
│ 0002_schedules.sql │
└────────────────────┘
"""


def test_migration_names_are_read_from_wranglers_tables() -> None:
    assert parse_migration_names(LIST_OUTPUT) == ["0001_job_runs.sql", "0002_schedules.sql"]
    applied = "│ 0001_job_runs.sql  │ ✅     │\n│ 0002_schedules.sql │ 🕒️    │\n" * 2
    assert parse_migration_names(applied) == ["0001_job_runs.sql", "0002_schedules.sql"]
    assert parse_migration_names("✅ No migrations to apply!\n") == []
