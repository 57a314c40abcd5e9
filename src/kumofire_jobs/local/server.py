"""`kumofire-jobs dev` and `kumofire-jobs migrate`: the embedded system in one process.

The HTTP API is served by uvicorn; the queue consumer, the coordinators' alarms and the cron
triggers run on the same event loop. uvicorn handles Ctrl-C and SIGTERM: it stops accepting
requests, and then the bindings stop cleanly (in-flight batches settle).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import RemoteHandlersError
from ..log import configure_logging, get_logger
from ..migrations import apply_migrations, pending_migrations
from ..runtime import Runtime
from ..web import create_app
from .data_dir_lock import DataDirectoryInUseError
from .environment import LocalEnvironment, WranglerSettings, open_local_d1
from .gc_tuning import freeze_startup_heap
from .services import ServiceSpecError, parse_service_spec, service_bindings

log = get_logger()

TOKEN_ENV = "KUMOFIRE_API_TOKEN"
DRAIN_SECONDS = 10.0  # how long Ctrl-C waits for running handlers


def load_runtime(spec: str | None) -> Runtime:
    """`MODULE:ATTRIBUTE`, imported from the current directory the way uvicorn loads an app;
    None gives the built-in demo."""
    if spec is None:
        spec = "kumofire_jobs.demo:runtime"
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise SystemExit(f"--app must look like MODULE:RUNTIME, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"could not import {module_name!r}: {exc}") from None
    value: Any = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise SystemExit(f"{module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(value, Runtime):
        raise SystemExit(f"{spec} is a {type(value).__name__}, not a runtime (create_runtime)")
    return value


def dev_environment(
    runtime: Runtime,
    data_dir: Path,
    *,
    settings: WranglerSettings | None = None,
    services: Sequence[str] = (),
) -> LocalEnvironment:
    """The environment `kumofire-jobs dev` runs (not started): `services` are `--service
    BINDING=MODULE:CLASS` arguments, each Worker loaded in-process behind its binding, which
    the routes of `KUMOFIRE_REMOTE_HANDLERS` in `settings.vars` reach. A bad argument or
    route raises SystemExit with the reason."""
    settings = settings or WranglerSettings()
    try:
        specs = [parse_service_spec(text) for text in services]
        entrypoints = {
            name: str(table["entrypoint"])
            for name, table in settings.services.items()
            if isinstance(table.get("entrypoint"), str)
        }
        bindings = service_bindings(specs, entrypoints)
        return LocalEnvironment(runtime, data_dir, settings=settings, services=bindings)
    except (ServiceSpecError, RemoteHandlersError, DataDirectoryInUseError) as exc:
        raise SystemExit(str(exc)) from None


def _describe_services(env: LocalEnvironment) -> Iterator[str]:
    for name, binding in env.services.items():
        yield f"  service binding {name}: {binding.target} (in-process)"
    for job, handler in env.resources.remote_handlers.items():
        yield f"  remote job {job!r} -> {getattr(handler, 'route', '?')}"


async def run_dev_server(
    *,
    app: str | None,
    host: str,
    port: int,
    data_dir: Path,
    config: Path | None,
    services: Sequence[str] = (),
) -> int:
    try:
        import uvicorn
    except ImportError:
        print(
            "kumofire-jobs dev needs uvicorn: pip install 'kumofire-jobs[local]'", file=sys.stderr
        )
        return 1
    configure_logging()
    runtime = load_runtime(app)
    settings = WranglerSettings.load(config) if config is not None else WranglerSettings()
    env = dev_environment(runtime, data_dir, settings=settings, services=services)
    await env.start()
    http = create_app(lambda request: env.jobs, api_token=os.environ.get(TOKEN_ENV) or None)
    freeze_startup_heap()  # short collector pauses from here on

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises a captured SIGTERM/SIGINT after serving, which would kill the
            # process before the bindings stop cleanly; ask it to exit and stop ourselves.
            handled = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            for listener in self.servers:
                for sock in listener.sockets:
                    bound_host, bound_port = sock.getsockname()[:2]
                    print(
                        f"Kumofire Jobs dev server listening on http://{bound_host}:{bound_port}"
                        f" (data in {data_dir}/)",
                        flush=True,
                    )
            for line in _describe_services(env):
                print(line, flush=True)

    server = Server(uvicorn.Config(http, host=host, port=port, log_level="warning", lifespan="off"))
    try:
        await server.serve()
    finally:
        await env.stop(drain_seconds=DRAIN_SECONDS)
    return 0


async def migrate_local(data_dir: Path, *, dry_run: bool) -> int:
    db = open_local_d1(data_dir)
    try:
        pending = await pending_migrations(db)
        if not pending:
            print("No migrations to apply.")
            return 0
        if dry_run:
            print("Migrations to apply:")
            for migration in pending:
                print(f"  {migration.name}")
            return 0
        for migration in await apply_migrations(db):
            print(f"Applied {migration.name}")
        return 0
    finally:
        db.close()
