"""README.md's Python snippets, run as a reader would copy them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def snippet(heading: str) -> str:
    """The first ```python block under `## heading`."""
    text = README.read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found is not None, f"no Python block under {heading!r}"
    return found.group(1)


@pytest.mark.slow
def test_from_python_locally_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text(snippet("From Python, locally"), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "script.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "error::ResourceWarning"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"^run_\w+ succeeded$", done.stdout, re.MULTILINE), done.stdout
    assert (tmp_path / ".kumofire-script" / "d1").is_dir()


def test_the_snippets_import_what_they_use() -> None:
    # The test snippet of "Use it in your project" imports the testing kit and the user's jobs.
    tests = snippet("Use it in your project")
    assert "from kumofire_jobs.testing import JobsHarness" in tests
    assert "from jobs import handlers" in tests
    assert "import pytest" in tests


def test_your_own_jobs_app_passes_ruff_and_runs(tmp_path: Path) -> None:
    # A reader saves it in the clone, where the test command runs ruff over it.
    app = tmp_path / "app.py"
    app.write_text(snippet("Your own jobs"), encoding="utf-8")
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--config",
            str(README.parent / "pyproject.toml"),
            str(app),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_your_own_jobs_app_fails_a_run_without_an_address(tmp_path: Path) -> None:
    from kumofire_jobs.core.runtime import Runtime
    from kumofire_jobs.testing import JobsHarness

    namespace: dict[str, object] = {}
    exec(compile(snippet("Your own jobs"), "app.py", "exec"), namespace)
    runtime = namespace["runtime"]
    assert isinstance(runtime, Runtime)
    async with JobsHarness(handlers=runtime.handlers) as harness:
        sent = await harness.jobs.create("email", {"to": "a@example.com"})
        unaddressed = await harness.jobs.create("email", {})
        await harness.drain()
        assert (await harness.run(sent.kumofire_job_run_id)).status == "succeeded"
        failed = await harness.run(unaddressed.kumofire_job_run_id)
        assert failed.status == "failed" and failed.attempt == 1
        assert "no 'to' in the payload" in (failed.last_error or "")


def test_the_readme_startup_output_mentions_the_migrations_line() -> None:
    text = README.read_text(encoding="utf-8")
    assert "`migrations.applied`" in text.split("## Quick start", 1)[1].split("```text", 1)[0]
