"""`kumofire-jobs`: the command line (API.md, "Command line")."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_DATA_DIR = ".kumofire"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
SYNCHRONOUS_LEVELS = ("NORMAL", "FULL")


def _port(text: str) -> int:
    """A TCP port number, checked here: uvicorn would fail on a bad one with a traceback."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: give 0 to 65535")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kumofire-jobs", description="Durable jobs for Cloudflare Python Workers."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser(
        "dev",
        help="run the whole system locally on the embedded bindings",
        description="Run the HTTP API, the queue consumer, coordinator alarms and the "
        "reconciliation cron in one process, on the embedded bindings under --data-dir.",
    )
    dev.add_argument(
        "--app",
        metavar="MODULE:RUNTIME",
        help="your runtime, as MODULE:ATTRIBUTE or path/to/module.py:ATTRIBUTE (default: "
        "app of [tool.kumofire-jobs] in ./pyproject.toml, else a built-in demo with jobs "
        "hello, flaky, fail and slow)",
    )
    dev.add_argument("--host", default=DEFAULT_HOST)
    dev.add_argument("--port", type=_port, default=DEFAULT_PORT)
    dev.add_argument("--data-dir", type=_data_dir, default=Path(DEFAULT_DATA_DIR))
    dev.add_argument(
        "--synchronous",
        type=str.upper,
        choices=SYNCHRONOUS_LEVELS,
        default="NORMAL",
        help="SQLite's durability level for the data directory: NORMAL (default) can lose the "
        "last writes on a power cut, never on a crash of the process; FULL syncs to disk "
        "before every answer of the API, so an acknowledged create or cancel survives a "
        "power cut (docs/local.md)",
    )
    dev.add_argument(
        "--config",
        type=Path,
        default=None,
        help="wrangler.toml to read queue consumer settings, crons and vars from, with the "
        ".dev.vars beside it over its [vars] (default: ./wrangler.toml when present)",
    )
    dev.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="BINDING=MODULE:CLASS",
        help="run another Worker's entrypoint class in-process as the service binding BINDING, "
        "for the job routes of KUMOFIRE_REMOTE_HANDLERS; MODULE is a module name or a .py "
        "path, CLASS defaults to the binding's entrypoint in wrangler.toml (repeatable)",
    )

    migrate = commands.add_parser("migrate", help="apply pending migrations to the local database")
    migrate.add_argument("--data-dir", type=_data_dir, default=Path(DEFAULT_DATA_DIR))
    migrate.add_argument("--dry-run", action="store_true", help="list pending migrations only")

    init = commands.add_parser(
        "init",
        help="create a new project: a Worker with two example jobs, its tests and config",
        description="Write a new Kumofire Jobs project into DIR (created; it must be empty): "
        "pyproject.toml, wrangler.toml (D1, queue, dead-letter queue, the coordinator Durable "
        "Object, cron), package.json (wrangler), src/jobs.py (two example handlers), "
        "src/entry.py (the Worker), the migrations, tests and a README.",
    )
    init.add_argument("directory", type=Path, metavar="DIR")
    init.add_argument("--name", default=None, help="the Worker's name (default: from DIR's name)")

    from .deploy.commands import add_cloudflare_parser

    add_cloudflare_parser(commands)

    from .ops import add_ops_parsers

    add_ops_parsers(commands)
    return parser


def _data_dir(value: str) -> Path:
    """--data-dir: a directory, or a path where one can be made; a file in the way is the
    command's mistake, said in one line (not a traceback from deep inside the start)."""
    path = Path(value)
    for where in (path, *path.parents):
        if where.exists() and not where.is_dir():
            raise argparse.ArgumentTypeError(f"{where} is a file, not a directory")
    return path


def _full_before_start(data_dir: Path) -> str | None:
    """The line to print if the data directory has no room left: opening it may need no
    write (its -wal and -shm files left by a process that could not checkpoint), and a
    server that starts only to fail every write would accept nothing."""
    from .local.disk import NEARLY_FULL_BYTES, free_bytes, full_disk_line

    free = free_bytes(data_dir)
    if free is None or free >= NEARLY_FULL_BYTES:
        return None
    return full_disk_line(data_dir, f"{free} bytes free")


def _storage_failure(error: Exception, data_dir: Path) -> int:
    """A full data directory ends the command with one line saying so; anything else is
    raised with its traceback."""
    from .local.disk import full_disk_message

    message = full_disk_message(error, data_dir)
    if message is None:
        raise error
    print(message, file=sys.stderr)
    return 1


# A shell's status for a process ended by SIGPIPE (128 + 13), as `git log | head` gives.
STDOUT_CLOSED = 141


def main(argv: Sequence[str] | None = None) -> int:
    """The command's exit status. A reader that closes the output early (`runs list --json |
    head`) ends it quietly with `STDOUT_CLOSED`, not a `BrokenPipeError` traceback."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit, where a closed pipe is reported on stderr
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush has nowhere to fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return STDOUT_CLOSED
    return code


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "dev":
        from .local.server import StartupError, configured_app, run_dev_server

        config = args.config
        if config is None and Path("wrangler.toml").is_file():
            config = Path("wrangler.toml")
        full = _full_before_start(args.data_dir)
        if full is not None:
            print(full, file=sys.stderr)
            return 1
        try:
            return asyncio.run(
                run_dev_server(
                    app=args.app or configured_app(Path("pyproject.toml")),
                    host=args.host,
                    port=args.port,
                    data_dir=args.data_dir,
                    config=config,
                    services=args.service,
                    synchronous=args.synchronous,
                )
            )
        except KeyboardInterrupt:
            return 130
        except StartupError as error:  # the user's input: one line, as argparse says it
            if error.detail:
                print(error.detail, end="", file=sys.stderr)
            print(f"kumofire-jobs dev: error: {error}", file=sys.stderr)
            return error.exit_code
        except Exception as exc:
            return _storage_failure(exc, args.data_dir)
    if args.command == "migrate":
        from .local.server import migrate_local

        try:
            return asyncio.run(migrate_local(args.data_dir, dry_run=args.dry_run))
        except Exception as exc:
            return _storage_failure(exc, args.data_dir)
    if args.command == "init":
        from .deploy.scaffold import InitOptions, run_init
        from .deploy.wrangler import DeployError

        try:
            return run_init(InitOptions(args.directory, name=args.name))
        except DeployError as error:
            print(f"kumofire-jobs init: error: {error}", file=sys.stderr)
            return 1
        except OSError as error:  # a directory that cannot be created or written
            where = error.filename if error.filename is not None else args.directory
            print(f"kumofire-jobs init: error: {where}: {error.strerror or error}", file=sys.stderr)
            return 1
    if args.command == "cloudflare":
        from .deploy.commands import run_cloudflare

        return run_cloudflare(args)
    if getattr(args, "ops", None) is not None:
        from .ops import run_ops

        return run_ops(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
