"""`cloudflare migrate` and `cloudflare check` with the real wrangler, offline: wrangler's
local D1 for migrate, `wrangler deploy --dry-run` for check."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from kumofire_jobs.cli import main
from kumofire_jobs.core.migrations import SCHEMA_VERSION
from tests.support.deploy import REPO, WRANGLER, needs_wrangler

SHIPPED = sorted(p.name for p in (REPO / "migrations").glob("*.sql"))


def with_wrangler(root: Path) -> None:
    """The repository's wrangler, as the project's own (`node_modules` is found upward)."""
    (root / "node_modules").symlink_to(WRANGLER.parent.parent, target_is_directory=True)


def applied_names(persist: Path) -> list[str]:
    """The d1_migrations record of the (only) local D1 database miniflare keeps in `persist`."""
    files = [
        p
        for p in (persist / "v3" / "d1" / "miniflare-D1DatabaseObject").glob("*.sqlite")
        if p.name != "metadata.sqlite"
    ]
    assert len(files) == 1, files
    with contextlib.closing(sqlite3.connect(files[0])) as db:  # `with connect()` never closes
        return [row[0] for row in db.execute("SELECT name FROM d1_migrations ORDER BY id")]


@pytest.mark.slow
@pytest.mark.timeout(300)
@needs_wrangler
def test_migrate_applies_through_wrangler_then_finds_nothing_pending(
    tmp_path: Path, wrangler_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "wrangler.toml", root)
    shutil.copytree(REPO / "migrations", root / "migrations")
    with_wrangler(root)
    persist = tmp_path / "state"
    command = ["cloudflare", "migrate", "--local", "--database", "kumofire-jobs",
               "--persist-to", str(persist), "--config", str(root / "wrangler.toml")]  # fmt: skip
    listing = "".join(f"  {name}\n" for name in SHIPPED)

    assert main([*command, "--dry-run"]) == 0
    assert capsys.readouterr().out == (
        f"Pending migrations on kumofire-jobs (local):\n{listing}"
        f"Dry run: nothing applied ({len(SHIPPED)} pending).\n"
    )

    assert main(command) == 0
    assert capsys.readouterr().out == (
        f"Pending migrations on kumofire-jobs (local):\n{listing}"
        f"Applied {len(SHIPPED)} migration(s) to kumofire-jobs (local).\n"
    )
    # wrangler's own record, the one `kumofire-jobs migrate` reads and keeps
    assert applied_names(persist) == SHIPPED
    assert len(SHIPPED) == SCHEMA_VERSION

    assert main(command) == 0
    assert capsys.readouterr().out == "No migrations to apply to kumofire-jobs (local).\n"
    assert main([*command, "--dry-run"]) == 0
    assert capsys.readouterr().out == "No migrations to apply to kumofire-jobs (local).\n"
    assert not (root / ".wrangler").exists()  # the state went to --persist-to


def repo_copy(tmp_path: Path) -> Path:
    """What `cloudflare check` reads of this repository, copied (the check itself copies it
    once more, so this only proves it never writes to the user's tree)."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("wrangler.toml", "pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(REPO / name, root)
    ignore = shutil.ignore_patterns("__pycache__", "tests")
    for name in ("src", "migrations", "coordinator"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    with_wrangler(root)
    return root


def files_under(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if "node_modules" not in p.parts}


@pytest.mark.slow
@pytest.mark.timeout(300)
@needs_wrangler
def test_check_passes_on_this_repository(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = repo_copy(tmp_path)
    before = files_under(root)
    code = main(["cloudflare", "check", "--config", str(root / "wrangler.toml")])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == f"Checking {root / 'wrangler.toml'}"
    assert "  ok: entry, Python 3.13, D1 and migrations, queue and consumer, coordinator, cron" in (
        lines
    )
    vendored = lines[lines.index(next(x for x in lines if x.startswith("vendored into"))) + 1]
    for package in ("kumofire-coordinator 0.1.0", "croniter", "starlette", "structlog", "tzdata"):
        assert package in vendored
    assert "msgspec" not in vendored and "uvicorn" not in vendored and "httpx" not in vendored
    assert (
        "  left to `pywrangler sync` (Pyodide's index, at deploy): msgspec==0.19.0, "
        "workers-runtime-sdk" in lines
    )
    upload = next(x for x in lines if x.startswith("upload (wrangler deploy --dry-run): "))
    assert " files, " in upload and " bytes; wrangler: " in upload
    graph = next(x for x in lines if x.startswith("import graph of entry.py: "))
    assert "0 from the Pyodide runtime" not in graph
    assert "kumofire_jobs.local" in next(x for x in lines if "never imported by the entry" in x)
    assert lines[-1].startswith("ok: the Worker bundle is complete: ")
    assert "error:" not in out
    assert files_under(root) == before  # nothing written to the project


@pytest.mark.slow
@pytest.mark.timeout(300)
@needs_wrangler
def test_check_fails_naming_a_forbidden_import_a_missing_module_and_the_dashboard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = repo_copy(tmp_path)
    (root / "src" / "handlers.py").write_text(
        "import httpx\n\n\nasync def local_store():\n"
        "    from kumofire_jobs.local.d1 import LocalD1Database\n\n"
        "    return LocalD1Database\n",
        encoding="utf-8",
    )
    entry = root / "src" / "entry.py"
    entry.write_text("import handlers\n" + entry.read_text(encoding="utf-8"), encoding="utf-8")
    config = root / "wrangler.toml"  # without the rule that uploads the dashboard's files
    text = config.read_text(encoding="utf-8")
    config.write_text(text[: text.index("[[rules]]")], encoding="utf-8")
    code = main(["cloudflare", "check", "--config", str(config)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert (
        "  error: [missing-module] httpx (imported at handlers.py:1; chain: entry -> handlers "
        "-> httpx)" in out.splitlines()
    )
    assert (
        "  error: [forbidden-import] kumofire_jobs.local (imported at handlers.py:5; chain: "
        "entry -> handlers -> kumofire_jobs.local): must not be reachable from the Worker entry"
        in out.splitlines()
    )
    dashboard = next(x for x in out.splitlines() if "[dashboard-files]" in x)
    assert dashboard.startswith("  error: [dashboard-files] kumofire_jobs/web/ui/: api.js, app.css")
    assert "app.js" in dashboard and "not uploaded" in dashboard
    assert "index.html" not in dashboard  # wrangler's default rules upload .html files
    assert out.splitlines()[-1] == "FAILED: 3 problem(s)"
