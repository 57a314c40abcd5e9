"""`kumofire-jobs cloudflare migrate`: D1 migrations through wrangler's own
`d1 migrations apply`, so wrangler's record of applied migrations (`d1_migrations`) is kept and
`kumofire-jobs migrate` (the local database) and wrangler can each follow the other."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .config import d1_database, load_config
from .wrangler import DeployError, Wrangler, WranglerResult, find_wrangler, wrangler_env

__all__ = ["MigrateOptions", "parse_migration_names", "run_migrate"]

# A row of wrangler's table whose first cell is a migration file: "│ 0001_job_runs.sql  │".
_ROW = re.compile(r"^\s*[│|]\s*([^│|\s]+\.sql)\s*[│|]", re.MULTILINE)
_NOTHING = "No migrations to apply"


@dataclass(frozen=True)
class MigrateOptions:
    database: str
    remote: bool
    config: Path
    dry_run: bool = False
    persist_to: Path | None = None


def parse_migration_names(output: str) -> list[str]:
    """The migration files `wrangler d1 migrations list` (or `apply`) shows, in order, once
    each."""
    names: list[str] = []
    for name in _ROW.findall(output):
        if name not in names:
            names.append(name)
    return names


def run_migrate(
    options: MigrateOptions,
    *,
    out: TextIO | None = None,
    wrangler: Wrangler | None = None,
) -> int:
    """List the pending migrations, then (unless a dry run) apply them. Returns the exit code;
    raises `DeployError` for what stops it before wrangler runs."""
    out = out if out is not None else sys.stdout
    config = load_config(options.config)
    database = d1_database(config, options.database)
    migrations_dir = config.directory / str(database.get("migrations_dir", "migrations"))
    if not migrations_dir.is_dir():
        raise DeployError(
            f"the migrations directory of {options.database!r} does not exist: {migrations_dir} "
            f"(migrations_dir in {config.path})"
        )
    runner = wrangler if wrangler is not None else find_wrangler(config.directory)
    where = "remote" if options.remote else "local"
    args = [str(database.get("database_name") or options.database)]
    args += ["--remote"] if options.remote else ["--local"]
    if options.persist_to is not None:
        args += ["--persist-to", str(options.persist_to.resolve())]
    args += ["--config", str(config.path)]

    listed = _wrangler(runner, ["d1", "migrations", "list", *args], config.directory)
    pending = parse_migration_names(listed.output)
    label = f"{args[0]} ({where})"
    if not pending:
        if _NOTHING not in listed.output:
            raise DeployError(
                "could not read the pending migrations from `wrangler d1 migrations list`:\n"
                + listed.output
            )
        print(f"No migrations to apply to {label}.", file=out)
        return 0
    print(f"Pending migrations on {label}:", file=out)
    for name in pending:
        print(f"  {name}", file=out)
    if options.dry_run:
        print(f"Dry run: nothing applied ({len(pending)} pending).", file=out)
        return 0

    applied = _wrangler(runner, ["d1", "migrations", "apply", *args], config.directory)
    print(f"Applied {len(pending)} migration(s) to {label}.", file=out)
    del applied
    return 0


def _wrangler(runner: Wrangler, args: list[str], cwd: Path) -> WranglerResult:
    # The user's own wrangler state (login, for --remote) is kept: no state_dir here.
    result = runner.run(args, cwd=cwd, env=wrangler_env())
    if not result.ok:
        raise DeployError(
            f"`wrangler {' '.join(args)}` failed (exit {result.returncode}):\n"
            + result.output.rstrip()
        )
    return result
