"""What `cloudflare check` vendors: the pure-Python runtime dependencies, non-editable, without
what pywrangler takes from Pyodide's index or what only the local server needs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kumofire_jobs.deploy.vendor import (
    VendorPlan,
    normalize,
    plan_from_metadata,
    plan_from_uv_export,
    pywrangler_module_names,
    vendor,
    verify_vendored,
)
from tests.support.deploy import REPO


def name(line: str) -> str:
    requirement = line.split(";")[0].strip()
    if requirement.startswith("/"):
        return Path(requirement).name
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match is not None, line
    return normalize(match.group())


def names(plan: VendorPlan) -> set[str]:
    return {name(line) for line in plan.requirements}


def test_the_lock_gives_the_pure_python_dependencies() -> None:
    plan = plan_from_uv_export(REPO)
    assert str(REPO / "coordinator") in plan.requirements  # a path: built, not editable
    assert {"croniter", "starlette", "structlog", "tzdata", "coordinator"} <= names(plan)
    assert not names(plan) & {"msgspec", "workers-runtime-sdk", "uvicorn", "kumofire-jobs"}
    assert plan.pywrangler == ("msgspec==0.19.0",)
    assert plan.local_only == ()
    assert all(not line.startswith(("-e", "./")) for line in plan.requirements)


def test_the_installed_metadata_gives_the_same_packages() -> None:
    from_lock = names(plan_from_uv_export(REPO))
    plan = plan_from_metadata("kumofire-jobs")
    # a dependency conditional on an older Python may be listed (with its marker): uv skips it
    conditional = {
        name(line) for line in plan.requirements if ";" in line and "==" not in line.split(";")[0]
    }
    assert names(plan) - conditional == from_lock - conditional
    assert plan.pywrangler == ("msgspec==0.19.0",)
    assert plan.local_only == ()
    with_local = plan_from_metadata("kumofire-jobs", extras=["local"])
    # httpx is in the extra for the ops commands; neither it nor its dependencies (anyio,
    # httpcore, ...) may reach the Worker bundle, as uvicorn's may not
    assert [line.split("==")[0] for line in with_local.local_only] == [
        "httpx",
        "python-dotenv",
        "uvicorn",
    ]
    assert names(with_local) == names(plan)
    with_http = plan_from_metadata("kumofire-jobs", extras=["http"])
    assert [line.split("==")[0] for line in with_http.local_only] == ["httpx"]
    assert names(with_http) == names(plan)


def test_the_import_names_of_pywranglers_packages() -> None:
    assert {"msgspec", "workers", "asgi"} <= pywrangler_module_names()


def test_what_cannot_run_on_workers_is_named(tmp_path: Path) -> None:
    target = tmp_path / "python_modules"
    (target / "fast").mkdir(parents=True)
    (target / "fast" / "_speedups.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    (target / "__editable__.kumofire_coordinator-0.1.0.pth").write_text("/home/me/coordinator\n")
    info = target / "kumofire_coordinator-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Name: kumofire-coordinator\nVersion: 0.1.0\n")
    problems = verify_vendored(target)
    assert len(problems) == 3, problems
    assert "__editable__.kumofire_coordinator-0.1.0.pth: a path file" in problems[0]
    assert "fast/_speedups.cpython-311-x86_64-linux-gnu.so: native code" in problems[1]
    assert (
        "python_modules/kumofire_coordinator/: the package's modules are missing" in (problems[2])
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_vendoring_installs_the_real_coordinator(tmp_path: Path) -> None:
    target = tmp_path / "python_modules"
    result = vendor(plan_from_uv_export(REPO), target, cwd=REPO)
    installed = {normalize(name) for name, _ in result.installed}
    assert {"kumofire-coordinator", "croniter", "starlette", "structlog", "tzdata"} <= installed
    assert not installed & {"msgspec", "workers-runtime-sdk", "uvicorn"}
    ours = sorted(p.name for p in (target / "kumofire_coordinator").glob("*.py"))
    theirs = sorted(p.name for p in (REPO / "coordinator/src/kumofire_coordinator").glob("*.py"))
    assert ours == theirs and "__init__.py" in ours
    assert list(target.glob("*.pth")) == []
    assert not (target / "bin").exists() and not (target / ".lock").exists()
    assert verify_vendored(target) == []
