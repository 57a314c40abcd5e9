"""The parts of `cloudflare check` around wrangler: the temporary copy, reading the upload, and
stopping early when the entry itself is wrong."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from kumofire_jobs.cli import main
from kumofire_jobs.deploy.check import CheckOptions, copy_project, read_upload, run_check
from kumofire_jobs.deploy.config import load_config
from kumofire_jobs.deploy.wrangler import Wrangler
from tests.support.deploy import ProjectFactory


def test_the_copy_holds_the_config_and_the_module_root_only(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    path = make_project()
    root = path.parent
    (root / "src" / "pkg").mkdir()
    (root / "src" / "pkg" / "__init__.py").write_text("", encoding="utf-8")
    (root / "src" / "__pycache__").mkdir()
    (root / "src" / "__pycache__" / "entry.cpython-311.pyc").write_bytes(b"")
    (root / "src" / "linked.py").symlink_to(root / "src" / "entry.py")
    (root / "python_modules").mkdir()  # a previous `pywrangler sync`: ours replaces it
    copied = copy_project(load_config(path), tmp_path / "copy")
    assert copied == tmp_path / "copy" / "wrangler.json"
    found = sorted(p.relative_to(tmp_path / "copy").as_posix() for p in copied.parent.rglob("*"))
    assert found == [
        "src",
        "src/entry.py",
        "src/linked.py",
        "src/pkg",
        "src/pkg/__init__.py",
        "wrangler.json",
    ]
    assert (copied.parent / "src" / "linked.py").is_symlink()  # wrangler sees what it would


def test_a_top_level_entry_copies_the_project_without_its_tools(tmp_path: Path) -> None:
    root = tmp_path / "project"
    for name in ("node_modules/x.js", ".venv/lib.py", "python_modules/a.py", "app/mod.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("", encoding="utf-8")
    (root / "entry.py").write_text("", encoding="utf-8")
    (root / "wrangler.toml").write_text('main = "entry.py"\n', encoding="utf-8")
    copied = copy_project(load_config(root / "wrangler.toml"), tmp_path / "copy")
    found = sorted(p.relative_to(copied.parent).as_posix() for p in copied.parent.rglob("*"))
    assert found == ["app", "app/mod.py", "entry.py", "wrangler.toml"]


def test_the_upload_is_every_file_wrangler_wrote_but_its_readme(tmp_path: Path) -> None:
    (tmp_path / "python_modules" / "lib").mkdir(parents=True)
    (tmp_path / "README.md").write_text("built output", encoding="utf-8")
    (tmp_path / "entry.py").write_bytes(b"x" * 10)
    (tmp_path / "python_modules" / "lib" / "__init__.py").write_bytes(b"y" * 5)
    upload = read_upload(tmp_path, "...\nTotal Upload: 0.01 KiB / gzip: 0.03 KiB\nBindings\n")
    assert [p.name for p in upload.files] == ["entry.py", "__init__.py"]
    assert upload.size == 15
    assert upload.wrangler_total == "0.01 KiB / gzip: 0.03 KiB"
    assert upload.vendor_root == tmp_path / "python_modules"


def test_a_missing_entry_stops_before_bundling(make_project: ProjectFactory) -> None:
    path = make_project()
    (path.parent / "src" / "entry.py").unlink()
    out = io.StringIO()
    never = Wrangler(("/nonexistent/wrangler",))  # running it would raise
    assert run_check(CheckOptions(config=path), out=out, wrangler=never) == 1
    lines = out.getvalue().splitlines()
    assert lines[1:] == [
        "config:",
        f"  error: [main] main = 'src/entry.py': no such file {path.parent / 'src/entry.py'}",
        "  warning: [d1-database-id] the JOBS_DB database_id is the placeholder: replace it "
        "with the id `wrangler d1 create kumofire-jobs` prints",
        "bundle: not checked (main must be fixed first)",
        "FAILED: 1 problem(s)",
    ]


def test_check_without_a_config_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["cloudflare", "check"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kumofire-jobs cloudflare check: error: no wrangler config at ")
