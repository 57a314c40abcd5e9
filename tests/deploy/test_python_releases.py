"""Which Python a Python Worker gets for its compatibility date and flags (`PYTHON_RELEASES`),
at the boundaries, and the table checked against the installed workerd when it is the pinned
one: workerd names the Pyodide bundle it loads (`--verbose`) before it fetches it, so the check
needs no network and no bundle."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from kumofire_jobs.deploy.config import (
    PINNED_WORKERD,
    PYTHON_313_DATES,
    PYTHON_RELEASES,
    python_release,
)
from tests.support.deploy import REPO

BASE = frozenset({"python_workers"})


def _python(date: str, *flags: str) -> str:
    return python_release(dt.date.fromisoformat(date), BASE | set(flags)).python


@pytest.mark.parametrize(
    ("date", "python"),
    [
        ("2024-12-31", "3.12"),
        ("2025-09-28", "3.12"),
        ("2025-09-29", "3.13"),
        ("2026-04-20", "3.13"),
        ("2026-04-21", "3.13"),
        ("2026-08-24", "3.13"),
        ("2026-08-25", "3.14"),
        ("2026-09-08", "3.14"),
    ],
)
def test_the_compatibility_date_selects_the_python(date: str, python: str) -> None:
    assert _python(date) == python


def test_the_313_window_is_derived_from_the_table() -> None:
    assert (dt.date(2025, 9, 29), dt.date(2026, 8, 24)) == PYTHON_313_DATES


def test_a_flag_selects_its_release_before_its_date_and_no_flag_refuses_it_after() -> None:
    assert _python("2025-06-01", "python_workers_20250116") == "3.13"
    assert _python("2026-08-25", "no_python_workers_20260610") == "3.13"
    assert _python("2026-08-25", "no_python_workers_20260610", "no_python_workers_20250116") == (
        "3.12"
    )
    assert _python("2026-01-01", "python_workers_20260610") == "3.14"


# --- against the installed workerd ------------------------------------------------------------


def _installed_workerd() -> Path | None:
    given = os.environ.get("MINIFLARE_WORKERD_PATH")
    if given:
        return Path(given)
    found = sorted((REPO / "node_modules" / "@cloudflare").glob("workerd-*/bin/workerd"))
    return found[0] if found else None


def _workerd_version(workerd: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(workerd), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().removeprefix("workerd ")


_STAMP = PINNED_WORKERD.split(".")[1]
_PINNED_DATE = f"{_STAMP[:4]}-{_STAMP[4:6]}-{_STAMP[6:]}"  # what `workerd --version` says
_CONFIG = """using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "main", worker = (
    modules = [ (name = "worker.py", pythonModule = embed "worker.py") ],
    compatibilityDate = "{date}",
    compatibilityFlags = [{flags}],
  )) ],
);
"""
_BUNDLE = re.compile(r"pyodide_([0-9A-Za-z.]+?)_\d{4}-\d\d-\d\d_\d+\.capnp\.bin")


def _bundle_asked_for(workerd: Path, directory: Path, date: str, flags: list[str]) -> str:
    """The Pyodide version workerd loads for a Python Worker of this date and flags: it logs
    the bundle's name before fetching it; it is stopped as soon as it has said so."""
    (directory / "worker.py").write_text(
        "from workers import WorkerEntrypoint\n\n\nclass Default(WorkerEntrypoint):\n"
        "    async def fetch(self, request):\n        return None\n"
    )
    config = directory / "config.capnp"
    config.write_text(_CONFIG.format(date=date, flags=", ".join(f'"{flag}"' for flag in flags)))
    cache = directory / "cache"
    cache.mkdir(exist_ok=True)
    command = [str(workerd), "serve", str(config), "--verbose"]
    command.append(f"--pyodide-bundle-disk-cache-dir={cache}")
    seen: list[str] = []
    deadline = time.monotonic() + 30
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        try:
            assert process.stdout is not None
            for line in process.stdout:
                seen.append(line)
                match = _BUNDLE.search(line)
                if match:
                    return match.group(1)
                if time.monotonic() > deadline:
                    break
        finally:
            process.kill()
    raise AssertionError(f"workerd named no Pyodide bundle for {date} {flags}:\n{''.join(seen)}")


@pytest.mark.slow
def test_the_table_matches_the_installed_workerd(tmp_path: Path) -> None:
    workerd = _installed_workerd()
    if workerd is None or not workerd.exists():
        pytest.skip("workerd is not installed: run `npm ci` at the repository root")
    version = _workerd_version(workerd)
    if version != _PINNED_DATE:
        pytest.skip(f"the installed workerd is {version}, not the pinned {PINNED_WORKERD}")
    cases: list[tuple[str, list[str]]] = [("2025-09-28", ["python_workers"])]
    for release in PYTHON_RELEASES:
        if release.default_from is not None:
            before = release.default_from - dt.timedelta(days=1)
            cases += [(before.isoformat(), ["python_workers"])]
            cases += [(release.default_from.isoformat(), ["python_workers"])]
    cases += [("2025-06-01", ["python_workers", "python_workers_20250116"])]
    cases += [("2026-08-25", ["python_workers", "no_python_workers_20260610"])]
    for date, flags in cases:
        expected = python_release(dt.date.fromisoformat(date), frozenset(flags)).pyodide
        assert _bundle_asked_for(workerd, tmp_path, date, flags) == expected, (date, flags)
