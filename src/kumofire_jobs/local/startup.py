"""What `kumofire-jobs dev` loads before it starts (the app, its pyproject table, wrangler.toml)
and the one-line errors it stops with when the user's input is wrong.

A `StartupError` is printed by the CLI as `kumofire-jobs dev: error: <message>`, the way
argparse reports a bad option, and ends the command with its exit code (2, a usage error,
unless said otherwise). An exception the user's own module raises while it is imported keeps
its traceback (trimmed to the user's frames), which they need to find the line; a runtime
whose configuration `create_runtime` refused (`ConfigurationError`: a job name with '/', an
option out of range) is one line, since the message says all there is.
"""

from __future__ import annotations

import errno
import importlib
import os
import socket
import sys
import tomllib
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

from ..core.errors import ConfigurationError
from ..core.runtime import Runtime
from .cron import to_croniter
from .environment import WranglerSettings

USAGE = 2  # argparse's exit status for a usage error; the CLI's for every one of them

APP_TABLE = "kumofire-jobs"
"""`[tool.kumofire-jobs]` in pyproject.toml: `app = "MODULE:RUNTIME"`, the runtime `kumofire-jobs
dev` serves there without `--app` (what `kumofire-jobs init` writes)."""

# Frames of these are ours or the import system's, before the user's module begins.
_NOT_THE_USERS = (str(Path(__file__).resolve().parents[1]), os.path.dirname(importlib.__file__))


class StartupError(SystemExit):
    """`kumofire-jobs dev` cannot start, for a reason the user can fix: one line (`str()`),
    after `detail` (the user's own traceback) when there is one. A `SystemExit`, so that
    uncaught it still ends the process with its message rather than a traceback."""

    def __init__(self, message: str, *, exit_code: int = USAGE, detail: str | None = None):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.detail = detail

    def __str__(self) -> str:
        return self.message


def configured_app(pyproject: Path) -> str | None:
    """The `app` of `[tool.kumofire-jobs]` in `pyproject`, if the file sets one."""
    if not pyproject.is_file():
        return None
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise StartupError(f"{pyproject}: not valid TOML: {exc}") from None
    table = data.get("tool", {}).get(APP_TABLE, {})
    app = table.get("app") if isinstance(table, dict) else None
    if app is not None and not isinstance(app, str):
        raise StartupError(f"{pyproject}: [tool.{APP_TABLE}] app must be a string MODULE:RUNTIME")
    return app


def load_runtime(spec: str | None) -> Runtime:
    """`MODULE:ATTRIBUTE`, imported from the current directory the way uvicorn loads an app, or
    `path/to/module.py:ATTRIBUTE`, imported by its name with its directory as the import root
    (as the directory of `main` is on Workers); None gives the built-in demo."""
    if spec is None:
        spec = "kumofire_jobs.demo:runtime"
    # rpartition: a Windows path has a colon of its own.
    module_name, sep, attribute = spec.rpartition(":")
    if not sep or not module_name or not attribute:
        raise StartupError(f"--app must look like MODULE:RUNTIME, got {spec!r}")
    root = os.getcwd()
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        path = Path(module_name).resolve()
        if not path.is_file() or path.suffix != ".py":
            raise StartupError(f"--app {spec}: no such Python file {path}")
        root, module_name = str(path.parent), path.stem
    if root not in sys.path:
        sys.path.insert(0, root)
    module = _import_app(spec, module_name)
    value: Any = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise StartupError(
                f"--app {spec}: {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not isinstance(value, Runtime):
        raise StartupError(
            f"--app {spec}: it is a {type(value).__name__}, not a runtime (create_runtime)"
        )
    return value


def _import_app(spec: str, module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ConfigurationError as exc:
        raise StartupError(f"--app {spec}: {exc}") from None
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise StartupError(f"--app {spec}: could not import {module_name!r}: {exc}") from None
        raise _failed_import(spec, module_name, exc) from None
    except Exception as exc:  # the user's module raised (SyntaxError included)
        raise _failed_import(spec, module_name, exc) from None


def _failed_import(spec: str, module_name: str, exc: Exception) -> StartupError:
    detail = "".join(traceback.format_exception(type(exc), exc, _users_frames(exc)))
    return StartupError(
        f"--app {spec}: importing {module_name!r} raised {type(exc).__name__} (traceback above)",
        detail=detail,
    )


def _users_frames(exc: BaseException) -> TracebackType | None:
    """The traceback from the first frame outside this package and the import machinery:
    where the user's code begins (None when it never began: a SyntaxError names its line
    itself)."""
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not (filename.startswith("<frozen") or filename.startswith(_NOT_THE_USERS)):
            return tb
        tb = tb.tb_next
    return None


DEV_VARS = ".dev.vars"  # wrangler's local secrets, beside wrangler.toml
API_TOKEN_VAR = "KUMOFIRE_API_TOKEN"


def dev_vars(path: Path) -> dict[str, str]:
    """The variables of a `.dev.vars` file (dotenv lines), as `wrangler dev` reads it for
    local development: none when there is no such file."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values  # the `local` extra, as uvicorn

    return {name: value for name, value in dotenv_values(path).items() if value is not None}


def load_settings(config: Path | None) -> WranglerSettings:
    """The settings of `config` (a wrangler.toml), with the `.dev.vars` beside it over its
    `[vars]` (as `wrangler dev` does), its cron triggers checked now (not in the middle of
    opening the data directory)."""
    if config is None:
        return WranglerSettings()
    try:
        settings = WranglerSettings.load(config)
        for cron in settings.crons:
            to_croniter(cron)
        settings.vars.update(dev_vars(config.parent / DEV_VARS))
        token = settings.vars.get(API_TOKEN_VAR)
        if token is not None and not isinstance(token, str):
            # (Ignored, the API would be served without one; the Worker disables its API.)
            raise StartupError(
                f"--config {config}: {API_TOKEN_VAR} in [vars] must be a string (the API's "
                f"bearer token), not {type(token).__name__}"
            )
    except OSError as exc:
        raise StartupError(f"--config {config}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise StartupError(f"--config {config}: not valid TOML: {exc}") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StartupError(f"--config {config}: {exc}") from None
    return settings


def listen(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to `host` and `port`, one per address the host resolves to (as asyncio's
    `create_server` binds them), for the server to listen on. Bound before anything else is
    opened, so a host that does not resolve (a usage error) or a port in use (exit status 1)
    stops the start in one line, not in uvicorn's after the data directory was opened."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"--host {host}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as create_server: the IPv4 address is its own
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"cannot listen on {where}: the address is in use (give another --port, or "
                "--port 0 for any free one)",
                exit_code=1,
            ) from None
        raise StartupError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    return sockets
