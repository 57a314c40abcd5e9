"""The floor under the service's lateness on workerd: what one binding call costs from a
Python Worker (a D1 query, a Durable Object RPC, a queue message from send to consumer), and
how late a Durable Object alarm fires when the object does nothing else (records the time),
in JavaScript and in Python, for a single alarm and for N alarms due at the same instant.

    uv run python -m bench.workerd_floor [--n 1,50,500] [--reps 3] [--probe-only]

Same setup as the real-runtime suite (tests/workerd/harness.py): `wrangler dev` on workerd,
offline, the Python runtime bundle built from Pyodide's npm package. Needs Node.js 24 on PATH
(`source scripts/uv.sh; source scripts/node.sh`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

from tests.workerd.harness import (
    DEV_FLAGS,
    REPO,
    WRANGLER,
    HarnessError,
    free_port,
    request,
    workerd_wrapper,
)
from tests.workerd.pyodide_bundle import build_bundle

from bench.stats import percentile

HERE = Path(__file__).parent / "workerd"


def vendor_sdk(target: Path) -> None:
    from importlib import metadata

    from kumofire_jobs.deploy.vendor import find_uv

    sdk = f"workers-runtime-sdk=={metadata.version('workers-runtime-sdk')}"
    subprocess.run(
        [*find_uv(), "pip", "install", "--target", str(target), "--no-deps",
         "--python-version", "3.13", "--python", sys.executable, sdk],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip


def make(root: Path, language: str) -> Path:
    with (REPO / "wrangler.toml").open("rb") as file:
        base = tomllib.load(file)
    directory = root / language
    (directory / "src").mkdir(parents=True)
    config: dict[str, Any] = {
        "name": f"timer-{language}",
        "compatibility_date": base["compatibility_date"],
        "durable_objects": {"bindings": [{"name": "TIMER", "class_name": "Timer"}]},
        "migrations": [{"tag": "v1", "new_sqlite_classes": ["Timer"]}],
    }
    if language == "py":
        shutil.copy(HERE / "timer.py", directory / "src" / "entry.py")
        vendor_sdk(directory / "python_modules")
        config.update(main="src/entry.py", compatibility_flags=[*base["compatibility_flags"],
                                                                 *DEV_FLAGS])  # fmt: skip
    else:
        shutil.copy(HERE / "timer.js", directory / "src" / "index.js")
        config["main"] = "src/index.js"
    path = directory / "wrangler.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def make_probe(root: Path) -> Path:
    with (REPO / "wrangler.toml").open("rb") as file:
        base = tomllib.load(file)
    directory = root / "probe"
    (directory / "src").mkdir(parents=True)
    shutil.copy(HERE / "probe.py", directory / "src" / "entry.py")
    vendor_sdk(directory / "python_modules")
    config: dict[str, Any] = {
        "name": "probe-py",
        "main": "src/entry.py",
        "compatibility_date": base["compatibility_date"],
        "compatibility_flags": [*base["compatibility_flags"], *DEV_FLAGS],
        "durable_objects": {"bindings": [{"name": "PROBE", "class_name": "Probe"}]},
        "migrations": [{"tag": "v1", "new_sqlite_classes": ["Probe"]}],
        "d1_databases": [{"binding": "DB", "database_name": "probe", "database_id": "probe"}],
        "queues": {
            "producers": [{"binding": "QUEUE", "queue": "probe"}],
            "consumers": [{"queue": "probe", "max_batch_size": 1, "max_batch_timeout": 0}],
        },
    }
    path = directory / "wrangler.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def probe(root: Path, wrapper: Path) -> dict[str, Any]:
    """One binding call's cost from Python: D1 query, DO RPC, DO RPC with a storage write,
    queue send to consumer."""
    port = free_port()
    process = start(root, make_probe(root), port, wrapper)
    url = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {}
    try:
        wait_ready(url)
        for path in ("/d1", "/do", "/do_write"):
            request(f"{url}{path}?n=5", token=None, timeout=120)  # warm
            out[path] = request(f"{url}{path}?n=50", token=None, timeout=120)[1]
        request(f"{url}/queue?n=20", token=None, timeout=120)
        time.sleep(3)
        out["/queue send -> consumer"] = request(f"{url}/queue_result", token=None)[1]
    finally:
        import os
        import signal

        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)
    return out


def start(root: Path, config: Path, port: int, wrapper: Path) -> subprocess.Popen[bytes]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_"))}
    env.update(MINIFLARE_WORKERD_PATH=str(wrapper), WRANGLER_SEND_METRICS="false", CI="true",
               WRANGLER_REGISTRY_PATH=str(root / "registry"), XDG_CONFIG_HOME=str(root / "home"),
               WRANGLER_LOG_PATH=str(root / "logs"))  # fmt: skip
    log = (root / f"{config.parent.name}.log").open("ab")
    return subprocess.Popen(
        [str(WRANGLER), "dev", "--config", str(config), "--ip", "127.0.0.1", "--port", str(port),
         "--inspector-port", str(free_port()), "--persist-to", str(root / "state"),
         "--show-interactive-dev-session=false"],
        cwd=config.parent, env=env, stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def wait_ready(url: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if request(f"{url}/health", token=None, timeout=10)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise HarnessError(f"{url} not ready")


def measure(url: str, n: int) -> list[float]:
    status, armed = request(f"{url}/arm?n={n}&delay={2000 + 10 * n}", token=None, timeout=120)
    assert status == 200, armed
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(1.0)
        status, answer = request(f"{url}/late?n={n}&key={armed['key']}", token=None, timeout=120)
        if status == 200 and answer["lates"] is not None:
            return [float(v) for v in answer["lates"]]
    raise RuntimeError(f"alarms of {n} objects did not all fire")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="1,50,500")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--probe-only", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kumofire-workerd-floor-"))
    print(f"state and logs under {root}", flush=True)
    wrapper = workerd_wrapper(root, build_bundle())
    for name, figures in probe(root, wrapper).items():
        print("python", name, figures, flush=True)
    if args.probe_only:
        return
    results: dict[str, Any] = {}
    for language in ("js", "py"):
        port = free_port()
        process = start(root, make(root, language), port, wrapper)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url)
            measure(url, 1)  # warm
            for n in (int(v) for v in args.n.split(",")):
                for _ in range(args.reps if n > 1 else args.reps * 5):
                    values = measure(url, n)
                    key = f"{language} n={n}"
                    results.setdefault(key, []).extend(values)
            for key, values in results.items():
                if key.startswith(language):
                    figures = {"n": len(values), "p50": statistics.median(values),
                               "p90": percentile(values, 90), "max": max(values)}  # fmt: skip
                    print(key, figures, flush=True)
        finally:
            import os
            import signal

            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
