"""The real-runtime suite's machinery: build the Workers' directories, start each under its own
`wrangler dev` on workerd (offline, wrangler's local D1, Queues and Durable Objects, a private
dev registry joining them), and talk to them over HTTP.

Three Workers, each in its own `wrangler dev` process (with `-c a -c b` only the first gets an
HTTP port):

- `kumofire-jobs`: the project's Worker: a copy of src/ whose entry.py adds the test handlers
  (workers/suite_handlers.py) and the runtime options; its wrangler.toml with the development
  Python flags, the remote-handler routes, and an API token.
- `kj-test-js`: workers/caller.js, calls JobsService over RPC, sends raw queue messages, and is
  a remote handler target.
- `kj-test-py`: workers/caller.py, calls JobsService through `JobsClient`, and is a remote
  handler target.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .pyodide_bundle import BUNDLE_NAME, build_bundle

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
WRANGLER = REPO / "node_modules" / ".bin" / "wrangler"
WORKERD = REPO / "node_modules" / "@cloudflare" / "workerd-linux-64" / "bin" / "workerd"
API_TOKEN = "workerd-suite-token"
DEV_FLAGS = ["python_workers_development", "no_python_workers_20250116"]
SERVICE = "kumofire-jobs"
JS_WORKER = "kj-test-js"
PY_WORKER = "kj-test-py"

ENTRY_HANDLERS = 'handlers = {"echo": echo}\n\nruntime = create_runtime(handlers)\n'
TEST_HANDLERS = (
    "from suite_handlers import TEST_HANDLERS, TEST_RUNTIME_OPTIONS\n\n"
    'handlers = {"echo": echo, **TEST_HANDLERS}\n\n'
    "runtime = create_runtime(handlers, **TEST_RUNTIME_OPTIONS)\n"
)


class HarnessError(RuntimeError):
    pass


def _uv() -> list[str]:
    from kumofire_jobs.deploy.vendor import find_uv

    return find_uv()


def vendor_python_modules(target: Path) -> None:
    """python_modules/ as `pywrangler sync` would fill it, offline: the locked pure-Python
    dependencies and the coordinator (the project's vendoring code), the Workers SDK, and the
    msgspec test double in place of Pyodide's msgspec build."""
    from importlib import metadata

    from kumofire_jobs.deploy.vendor import plan_from_uv_export, vendor, verify_vendored

    plan = plan_from_uv_export(REPO)
    vendor(plan, target, cwd=REPO)  # from the uv cache; PyPI only for what it lacks
    problems = verify_vendored(target)
    if problems:
        raise HarnessError("\n".join(problems))
    sdk = f"workers-runtime-sdk=={metadata.version('workers-runtime-sdk')}"
    done = subprocess.run(
        [*_uv(), "pip", "install", "--target", str(target), "--no-deps",
         "--python-version", "3.13", "--python", sys.executable, "--link-mode", "copy", sdk],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        raise HarnessError(f"vendoring {sdk} failed:\n{done.stderr}")
    shutil.copytree(
        HERE / "msgspec_double" / "msgspec",
        target / "msgspec",
        ignore=shutil.ignore_patterns("__pycache__"),
    )


def _config(name: str, main: str, **extra: Any) -> dict[str, Any]:
    with (REPO / "wrangler.toml").open("rb") as file:
        base = tomllib.load(file)
    config = {
        "name": name,
        "main": main,
        "compatibility_date": base["compatibility_date"],
        "compatibility_flags": [*base["compatibility_flags"], *DEV_FLAGS],
    }
    config.update(extra)
    return config


def service_config() -> dict[str, Any]:
    with (REPO / "wrangler.toml").open("rb") as file:
        config: dict[str, Any] = tomllib.load(file)
    config["compatibility_flags"] = [*config["compatibility_flags"], *DEV_FLAGS]
    config["services"] = [
        {"binding": "JS_HANDLERS", "service": JS_WORKER, "entrypoint": "Handlers"},
        {"binding": "PY_HANDLERS", "service": PY_WORKER, "entrypoint": "PyHandlers"},
    ]
    config["vars"] = {
        "KUMOFIRE_API_TOKEN": API_TOKEN,
        "KUMOFIRE_REMOTE_HANDLERS": {
            "js_notify": {"binding": "JS_HANDLERS", "method": "run_job"},
            "py_notify": {"binding": "PY_HANDLERS"},
        },
    }
    return config


def build(root: Path) -> dict[str, Path]:
    """The three Workers' directories under `root`; answers name -> config path."""
    modules = root / "python_modules"
    vendor_python_modules(modules)
    # The repository's wrangler, found upward from each config as a project's own would be.
    (root / "node_modules").symlink_to(REPO / "node_modules", target_is_directory=True)

    service = root / SERVICE
    shutil.copytree(REPO / "src", service / "src", ignore=shutil.ignore_patterns("__pycache__"))
    entry = (REPO / "src" / "entry.py").read_text(encoding="utf-8")
    if ENTRY_HANDLERS not in entry:
        raise HarnessError(f"src/entry.py no longer has {ENTRY_HANDLERS!r}: update the harness")
    (service / "src" / "entry.py").write_text(entry.replace(ENTRY_HANDLERS, TEST_HANDLERS))
    shutil.copy(HERE / "workers" / "suite_handlers.py", service / "src" / "suite_handlers.py")
    shutil.copytree(REPO / "migrations", service / "migrations")
    shutil.copytree(modules, service / "python_modules")

    py = root / PY_WORKER
    (py / "src").mkdir(parents=True)
    shutil.copy(HERE / "workers" / "caller.py", py / "src" / "entry.py")
    shutil.copytree(
        REPO / "src" / "kumofire_jobs",
        py / "src" / "kumofire_jobs",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copytree(modules, py / "python_modules")

    js = root / JS_WORKER
    (js / "src").mkdir(parents=True)
    shutil.copy(HERE / "workers" / "caller.js", js / "src" / "index.js")

    configs = {
        SERVICE: service_config(),
        PY_WORKER: _config(
            PY_WORKER, "src/entry.py",
            services=[{"binding": "JOBS", "service": SERVICE, "entrypoint": "JobsService"}],
        ),
        JS_WORKER: {
            "name": JS_WORKER, "main": "src/index.js",
            "compatibility_date": _config(JS_WORKER, "")["compatibility_date"],
            "services": [{"binding": "JOBS", "service": SERVICE, "entrypoint": "JobsService"}],
            "queues": {"producers": [{"binding": "QUEUE", "queue": "kumofire-jobs"}]},
        },
    }  # fmt: skip
    paths = {}
    for name, config in configs.items():
        path = root / name / "wrangler.json"
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        paths[name] = path
    return paths


def workerd_wrapper(root: Path, bundle_dir: Path) -> Path:
    """A workerd that wrangler starts (MINIFLARE_WORKERD_PATH) with the bundle directory."""
    if not WORKERD.is_file():
        raise HarnessError(f"{WORKERD} is missing: run `npm ci`")
    if not (bundle_dir / BUNDLE_NAME).is_file():
        raise HarnessError(f"{bundle_dir / BUNDLE_NAME} is missing")
    wrapper = root / "workerd"
    wrapper.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = serve ]; then\n'
        "  shift\n"
        f'  exec "{WORKERD}" serve --pyodide-bundle-disk-cache-dir "{bundle_dir}" "$@"\n'
        "fi\n"
        f'exec "{WORKERD}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Worker:
    name: str
    config: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Stack:
    """The three `wrangler dev` processes, sharing a dev registry and a state directory."""

    def __init__(self, root: Path, log_level: str = "log") -> None:
        self.root = root
        # wrangler's `--log-level`: "log" shows the Worker's console lines (the suite reads
        # them); a burst's benchmark lowers it (bench/README.md, "A burst of 500").
        self.log_level = log_level
        self.bundle_dir = build_bundle()
        self.configs = build(root / "build")
        self.wrapper = workerd_wrapper(root, self.bundle_dir)
        (root / "registry").mkdir()
        (root / "home").mkdir()
        self.workers = {
            name: Worker(name, path, free_port(), root / f"{name}.log")
            for name, path in self.configs.items()
        }
        self.workers[SERVICE].extra = ["--test-scheduled"]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_"))}
        env.update(
            WRANGLER_REGISTRY_PATH=str(self.root / "registry"),
            MINIFLARE_WORKERD_PATH=str(self.wrapper),
            WRANGLER_SEND_METRICS="false",
            WRANGLER_LOG_PATH=str(self.root / "wrangler-logs"),
            XDG_CONFIG_HOME=str(self.root / "home"),
            CI="true",
            NO_COLOR="1",
            FORCE_COLOR="0",
        )
        return env

    def start(self, name: str) -> None:
        worker = self.workers[name]
        log = worker.log.open("ab")
        worker.process = subprocess.Popen(
            [str(WRANGLER), "dev", "--config", str(worker.config), "--ip", "127.0.0.1",
             "--port", str(worker.port), "--inspector-port", str(free_port()),
             "--persist-to", str(self.root / "state"), "--log-level", self.log_level,
             "--show-interactive-dev-session=false", *worker.extra],
            cwd=worker.config.parent, env=self.env(), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()

    def stop(self, name: str) -> None:
        worker = self.workers[name]
        process = worker.process
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        worker.process = None

    def stop_all(self) -> None:
        for name in self.workers:
            self.stop(name)

    def wait_ready(self, name: str, path: str, timeout: float = 240) -> None:
        worker = self.workers[name]
        deadline = time.monotonic() + timeout
        last = ""
        port_retries = 3
        while time.monotonic() < deadline:
            if worker.process is not None and worker.process.poll() is not None:
                if port_retries and "Address already in use" in self.tail(name):
                    # A port picked free was taken before wrangler bound it (its own
                    # processes pick ports too): start again on another one.
                    port_retries -= 1
                    worker.port = free_port()
                    self.start(name)
                    continue
                raise HarnessError(
                    f"{name} exited ({worker.process.returncode}):\n{self.tail(name)}"
                )
            try:
                with urllib.request.urlopen(worker.url + path, timeout=10) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.5)
        raise HarnessError(f"{name} not ready in {timeout:.0f} s ({last}):\n{self.tail(name)}")

    def tail(self, name: str, chars: int = 6000) -> str:
        log = self.workers[name].log
        return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"

    def migrate(self) -> None:
        """The service's D1 migrations, applied as a user would (`cloudflare migrate`)."""
        config = self.configs[SERVICE]
        done = subprocess.run(
            [sys.executable, "-m", "kumofire_jobs.cli", "cloudflare", "migrate", "--local",
             "--database", "kumofire-jobs", "--persist-to", str(self.root / "state"),
             "--config", str(config)],
            cwd=config.parent, env=self.env(), capture_output=True, text=True, check=False,
            timeout=300,
        )  # fmt: skip
        if done.returncode != 0:
            raise HarnessError(f"migrate failed:\n{done.stdout}\n{done.stderr}")

    def d1_execute(self, sql: str) -> None:
        """A statement on the service's local D1 from outside the Worker (`wrangler d1
        execute --local`), as an operator would, while the Worker runs."""
        config = self.configs[SERVICE]
        done = subprocess.run(
            [str(WRANGLER), "d1", "execute", "kumofire-jobs", "--local", "--persist-to",
             str(self.root / "state"), "--config", str(config), "--command", sql],
            cwd=config.parent, env=self.env(), capture_output=True, text=True, check=False,
            timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            raise HarnessError(f"d1 execute failed:\n{done.stdout}\n{done.stderr}")


# --- HTTP --------------------------------------------------------------------------------------


def request(
    url: str,
    method: str = "GET",
    body: Any = None,
    *,
    token: str | None = API_TOKEN,
    timeout: float = 60,
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    text = raw.decode(errors="replace")
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text
