"""`kumofire-jobs dev` and `kumofire-jobs migrate`: the embedded system in one process.

The HTTP API is served by uvicorn; the queue consumer, the coordinators' alarms and the cron
triggers run on the same event loop. Ctrl-C or SIGTERM stops accepting requests, then the
bindings stop cleanly (in-flight batches settle, for up to DRAIN_SECONDS); a second stops at
once. Each step is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..core.errors import ConfigurationError
from ..core.log import configure_logging, get_logger
from ..core.migrations import apply_migrations, pending_migrations
from ..core.runtime import Runtime
from ..core.unhandled import unhandled_jobs, unhandled_warning
from ..web import create_app
from ..web.origin import is_loopback
from .data_dir_lock import DataDirectoryInUseError
from .environment import LocalEnvironment, WranglerSettings, open_local_d1
from .gc_tuning import freeze_startup_heap
from .services import ServiceSpecError, parse_service_spec, service_bindings
from .startup import (
    API_TOKEN_VAR,
    StartupError,
    configured_app,
    listen,
    load_runtime,
    load_settings,
)

__all__ = ["StartupError", "configured_app", "dev_environment", "load_runtime", "run_dev_server"]

log = get_logger()

TOKEN_ENV = API_TOKEN_VAR
DRAIN_SECONDS = 10.0  # how long Ctrl-C waits for running handlers
MAX_HEADER_BYTES = 128 * 1024  # a request's headers in all, as Cloudflare takes them


def api_token(settings: WranglerSettings) -> str | None:
    """The token the API asks for: `$KUMOFIRE_API_TOKEN`, else the variable of that name in
    `.dev.vars` or `[vars]` (where a Worker's token is for `wrangler dev`), else none."""
    token = os.environ.get(TOKEN_ENV) or settings.vars.get(TOKEN_ENV)
    return token if isinstance(token, str) and token else None


def dev_environment(
    runtime: Runtime,
    data_dir: Path,
    *,
    settings: WranglerSettings | None = None,
    services: Sequence[str] = (),
    synchronous: str = "NORMAL",
) -> LocalEnvironment:
    """The environment `kumofire-jobs dev` runs (not started): `services` are `--service
    BINDING=MODULE:CLASS` arguments, each Worker loaded in-process behind its binding, which
    the routes of `KUMOFIRE_REMOTE_HANDLERS` in `settings.vars` reach. A bad argument or
    route raises `StartupError` with the reason (a usage error), as does a data directory
    that another process holds (exit status 1: nothing is wrong with the command)."""
    settings = settings or WranglerSettings()
    try:
        specs = [parse_service_spec(text) for text in services]
        entrypoints = {
            name: str(table["entrypoint"])
            for name, table in settings.services.items()
            if isinstance(table.get("entrypoint"), str)
        }
        bindings = service_bindings(specs, entrypoints)
        return LocalEnvironment(
            runtime, data_dir, settings=settings, services=bindings, synchronous=synchronous
        )
    except (ServiceSpecError, ConfigurationError) as exc:
        raise StartupError(str(exc)) from None
    except DataDirectoryInUseError as exc:
        raise StartupError(str(exc), exit_code=1) from None


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
    synchronous: str = "NORMAL",
) -> int:
    try:
        import uvicorn  # noqa: F401 (here only to say so when it is missing)
    except ImportError:
        print(
            "kumofire-jobs dev needs uvicorn: pip install 'kumofire-jobs[local]'", file=sys.stderr
        )
        return 1
    configure_logging()
    runtime = load_runtime(app)
    settings = load_settings(config)
    sockets = listen(host, port)
    try:
        env = dev_environment(
            runtime, data_dir, settings=settings, services=services, synchronous=synchronous
        )
        return await _serve(env, sockets, app=app, host=host, data_dir=data_dir)
    finally:
        for sock in sockets:  # uvicorn closed those it served on; these if it never did
            sock.close()


async def _serve(
    env: LocalEnvironment, sockets: list[Any], *, app: str | None, host: str, data_dir: Path
) -> int:
    import uvicorn  # there: run_dev_server said so when it is missing

    runtime = env.runtime
    # Before the consumer starts: it would fail those runs at once.
    handled = set(runtime.handlers) | set(env.resources.remote_handlers)
    unhandled = unhandled_warning(await unhandled_jobs(env.JOBS_DB, handled), f"{data_dir}/")
    await env.start()
    http = create_app(
        lambda request: env.jobs,
        api_token=api_token(env.settings),
        loopback=is_loopback(host),
    )
    freeze_startup_heap()  # short collector pauses from here on

    stopping = _Stopping(env)

    class Server(uvicorn.Server):
        def __init__(self, config: uvicorn.Config) -> None:
            super().__init__(config)
            self.exiting = asyncio.Event()

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            self.exiting.set()

        async def main_loop(self) -> None:
            # uvicorn's looks for an exit every 0.1 s; this one wakes on the signal itself,
            # and otherwise once a second, for the Date header (what on_tick keeps).
            counter = 0
            while not await self.on_tick(counter):
                counter = (counter + 10) % 864000
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.exiting.wait(), 1.0)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # Ours are installed for the whole run, the drain after serving included (uvicorn
            # would re-raise a captured signal after serving and kill the process first).
            yield

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            for listener in self.servers:
                for sock in listener.sockets:
                    bound_host, bound_port = sock.getsockname()[:2]
                    print(
                        f"Kumofire Jobs dev server listening on http://{bound_host}:{bound_port}"
                        f" (data in {data_dir}/, synchronous={env.JOBS_DB.synchronous})",
                        flush=True,
                    )
            print(
                f"  jobs ({app or 'the built-in demo'}): {', '.join(sorted(runtime.handlers))}",
                flush=True,
            )
            for line in _describe_services(env):
                print(line, flush=True)
            if unhandled is not None:
                print(unhandled, flush=True)

    # Its sockets are bound already (`listen`): the config names no host or port.
    server = Server(
        uvicorn.Config(
            http,
            log_level="warning",
            lifespan="off",
            # h11's default, 16 KiB, refused larger headers only when they came in more than
            # one read (a slow client, a tunnel): Cloudflare's limit instead, whatever the reads.
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        )
    )
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stopping.signal, sig, server)
    try:
        await server.serve(sockets=sockets)
    finally:
        try:
            cut_off = await env.stop(drain_seconds=DRAIN_SECONDS, interrupt=stopping.now)
            stopping.stopped(cut_off)
        finally:
            for sig in _STOP_SIGNALS:
                loop.remove_signal_handler(sig)
    return 0


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Stopping:
    """Ctrl-C (or SIGTERM) once: stop serving, then wait up to DRAIN_SECONDS for the running
    handlers, saying so. Twice: stop at once; the handlers still running are cut off, as by a
    crash: their runs stay `running` until the next start, which ends their leases (the data
    directory's lock proves their holder gone) and runs them again (the cut-off attempt
    counts)."""

    def __init__(self, env: LocalEnvironment) -> None:
        self._env = env
        self.signals = 0
        self.now = asyncio.Event()

    def signal(self, sig: signal.Signals, server: Any) -> None:
        self.signals += 1
        server.handle_exit(sig, None)  # a second SIGINT makes uvicorn drop open connections
        if self.signals == 1:
            running = self._env.running_handlers()
            key = "Ctrl-C" if sig == signal.SIGINT else sig.name
            if running:
                print(
                    f"Stopping: waiting up to {DRAIN_SECONDS:g} s for {_runs(running)} to finish"
                    f" ({key} again to stop now; a run cut off runs again at the next start)",
                    flush=True,
                )
            else:
                print("Stopping.", flush=True)
        elif not self.now.is_set():
            server.force_exit = True
            self.now.set()
            print("Stopping now.", flush=True)

    def stopped(self, cut_off: int) -> None:
        if cut_off:
            print(
                f"Stopped: {_runs(cut_off)} cut off; each runs again at the next start"
                " (the cut-off attempt counts)",
                flush=True,
            )
        else:
            print("Stopped.", flush=True)


def _runs(n: int) -> str:
    return f"{n} running run" if n == 1 else f"{n} running runs"


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
