"""The `kumofire-jobs cloudflare` command group (API.md, "Command line")."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_cloudflare_parser", "run_cloudflare"]


def add_cloudflare_parser(commands: Any) -> None:
    """Add `cloudflare migrate` and `cloudflare check` to the CLI's subparsers."""
    cloudflare = commands.add_parser(
        "cloudflare",
        help="deploy-side tools: D1 migrations through wrangler, the pre-deploy check",
        description="Tools for the deployed service, run through the project's wrangler.",
    )
    group = cloudflare.add_subparsers(dest="cloudflare_command", required=True)

    migrate = group.add_parser(
        "migrate",
        help="apply pending D1 migrations through `wrangler d1 migrations apply`",
        description="List the pending D1 migrations with `wrangler d1 migrations list`, then "
        "apply them with `wrangler d1 migrations apply`, which records them in wrangler's "
        "d1_migrations table (the record `kumofire-jobs migrate` keeps too).",
    )
    where = migrate.add_mutually_exclusive_group(required=True)
    where.add_argument("--local", action="store_true", help="wrangler's local D1 (miniflare)")
    where.add_argument("--remote", action="store_true", help="the Cloudflare D1 database")
    migrate.add_argument(
        "--database",
        required=True,
        metavar="NAME",
        help="the database_name (or binding) of a [[d1_databases]] entry of the config",
    )
    migrate.add_argument("--dry-run", action="store_true", help="list pending migrations only")
    migrate.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="the wrangler config (default: wrangler.toml, .jsonc or .json here)",
    )
    migrate.add_argument(
        "--persist-to",
        type=Path,
        default=None,
        metavar="DIR",
        help="with --local: wrangler's local state directory (default: .wrangler/state)",
    )

    check = group.add_parser(
        "check",
        help="prove the Worker bundle complete before `pywrangler deploy`",
        description="Validate the wrangler config for the Kumofire Jobs runtime, vendor the "
        "pure-Python dependencies into a temporary copy of the project, run `wrangler deploy "
        "--dry-run` on it, and prove every module the entry imports is in the upload, "
        "standard, or vendored by pywrangler at deploy, and that none is forbidden.",
    )
    check.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="the wrangler config (default: wrangler.toml, .jsonc or .json here)",
    )
    check.add_argument(
        "--offline",
        action="store_true",
        help="vendor from the uv cache only; fail rather than download",
    )


def run_cloudflare(args: argparse.Namespace) -> int:
    from .config import default_config_path
    from .wrangler import DeployError

    config = args.config if args.config is not None else default_config_path()
    try:
        if args.cloudflare_command == "migrate":
            from .migrate import MigrateOptions, run_migrate

            if args.persist_to is not None and args.remote:
                raise DeployError("--persist-to applies to --local only")
            return run_migrate(
                MigrateOptions(
                    database=args.database,
                    remote=args.remote,
                    config=config,
                    dry_run=args.dry_run,
                    persist_to=args.persist_to,
                )
            )
        from .check import CheckOptions, run_check

        return run_check(CheckOptions(config=config, offline=args.offline))
    except DeployError as error:
        print(
            f"kumofire-jobs cloudflare {args.cloudflare_command}: error: {error}", file=sys.stderr
        )
        return 1
