"""Nothing reachable from `src/entry.py` imports `sqlite3` or the local bindings (DESIGN.md,
"Dependency rules"), and nothing there reaches `js`/`pyodide` at import time.

Checked in a fresh interpreter whose import system refuses those modules, with the stand-in
`workers` package (the real SDK needs Pyodide) first on the path."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUBS = Path(__file__).parents[1] / "support" / "sdk_stub"

SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import sys

    FORBIDDEN = ("sqlite3", "_sqlite3", "kumofire_jobs.local", "js", "pyodide", "_pyodide")

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                raise ImportError(f"forbidden import on the Worker's path: {name}")
            return None

    sys.meta_path.insert(0, Refuse())
    sys.path[:0] = [STUBS, SRC]
    already = sorted(m for m in sys.modules if m.split(".")[0] in ("sqlite3", "_sqlite3"))
    assert not already, already

    import entry
    import kumofire_jobs.cloudflare
    import kumofire_jobs.cloudflare.service
    import kumofire_jobs.cloudflare.worker

    loaded = sorted(sys.modules)
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, bad
    assert "kumofire_jobs.cloudflare" in loaded and "kumofire_coordinator" in loaded
    assert "kumofire_jobs.cloudflare.remote" in loaded  # remote handlers are on the Worker's path
    assert entry.JobCoordinator and entry.JobsService and entry.Default
    print("ok", len(loaded))
    """
)


def test_entry_module_graph_avoids_sqlite3_local_bindings_and_pyodide() -> None:
    script = SCRIPT.replace("STUBS", repr(str(STUBS))).replace("SRC", repr(str(ROOT / "src")))
    done = subprocess.run(
        [sys.executable, "-I", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")


def test_the_hook_does_catch_a_forbidden_import() -> None:
    """The check above is only as good as its hook: importing the local bindings must fail."""
    script = SCRIPT.replace("STUBS", repr(str(STUBS))).replace("SRC", repr(str(ROOT / "src")))
    script = script.replace("import entry\n", "import entry\nimport kumofire_jobs.local.d1\n")
    done = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode != 0
    assert "forbidden import on the Worker's path: kumofire_jobs.local" in done.stderr


CLIENT_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path[:0] = [SRC]

    import kumofire_jobs.client
    from kumofire_jobs.cloudflare.client import JobsClient

    assert kumofire_jobs.client.JobsClient is JobsClient
    heavy = sorted(
        m for m in sys.modules
        if m.split(".")[0] in ("starlette", "uvicorn", "sqlite3", "_sqlite3")
        or m.startswith(("kumofire_jobs.web", "kumofire_jobs.local"))
        or m == "kumofire_jobs.cloudflare.worker"
    )
    assert not heavy, heavy
    print("ok", len(sys.modules))
    """
)


def test_the_client_loads_no_http_layer() -> None:
    """What a calling Worker imports (`kumofire_jobs.client`) loads neither Starlette nor the HTTP
    app nor the Worker glue, package `__init__` files included (import-linter's `client-light`
    contract sees the modules' own imports, not those of the packages they sit in)."""
    script = CLIENT_SCRIPT.replace("SRC", repr(str(ROOT / "src")))
    done = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")
