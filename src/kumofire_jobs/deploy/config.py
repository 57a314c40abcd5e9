"""The wrangler configuration: reading it, and naming what the Kumofire Jobs runtime needs
from it that is missing or wrong (see `wrangler.toml` at the repository root)."""

from __future__ import annotations

import ast
import datetime as dt
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..cloudflare.remote import REMOTE_HANDLERS_VAR, parse_routes
from ..core.errors import RemoteHandlersError
from ..core.migrations import MigrationError, default_migrations_dir, discover_migrations
from ..core.runtime import COORDINATOR_BINDING, DB_BINDING, QUEUE_BINDING
from .wrangler import DeployError

__all__ = [
    "COMPATIBILITY_DATE",
    "CONFIG_NAMES",
    "PINNED_WORKERD",
    "PINNED_WRANGLER",
    "PYTHON_313_DATES",
    "PYTHON_RELEASES",
    "Problem",
    "PythonRelease",
    "Severity",
    "WranglerConfig",
    "d1_database",
    "default_config_path",
    "load_config",
    "python_release",
    "validate_config",
]

CONFIG_NAMES = ("wrangler.toml", "wrangler.jsonc", "wrangler.json")
"""The files wrangler reads, in its order, when no --config is given."""

PINNED_WORKERD = "1.20260820.1"
"""The workerd whose Python releases `PYTHON_RELEASES` records: the one of the wrangler that
package.json pins (`PINNED_WRANGLER`)."""

PINNED_WRANGLER = "4.125.0"
"""The wrangler this repository's package.json pins, and `kumofire-jobs init` writes."""


@dataclass(frozen=True)
class PythonRelease:
    """One Python runtime a Python Worker can get. workerd picks the newest release whose
    compatibility flag is on: the first (Python 3.12) with `python_workers` itself; each later
    one when its flag is listed, or from `default_from` on unless `no_<flag>` is listed."""

    python: str
    pyodide: str
    flag: str
    default_from: dt.date | None = None

    def selected_by(self, date: dt.date, flags: frozenset[str]) -> bool:
        if self.default_from is None or self.flag in flags:
            return True
        return date >= self.default_from and f"no_{self.flag}" not in flags


PYTHON_RELEASES: tuple[PythonRelease, ...] = (
    PythonRelease("3.12", "0.26.0a2", "python_workers"),
    PythonRelease("3.13", "0.28.2", "python_workers_20250116", dt.date(2025, 9, 29)),
    PythonRelease("3.14", "314.0.4", "python_workers_20260610", dt.date(2026, 8, 25)),
)
"""workerd 1.20260820.1's Python releases, oldest first, as its release table and its
compatibility flags (`impliedByAfterDate` of `python_workers`) define them; a test starts the
installed workerd at each boundary and checks which Pyodide bundle it asks for. Newer workerd
may move a date (1.20261117.1 gives 3.14 from 2026-09-08, not 2026-08-25)."""

TARGET_PYTHON = "3.13"
"""The Python the Worker is built for: Pyodide 0.28.2's, whose package index has msgspec."""


def python_release(date: dt.date, flags: frozenset[str] = frozenset()) -> PythonRelease:
    """The release a Python Worker with this compatibility date and these flags gets."""
    return [r for r in PYTHON_RELEASES if r.selected_by(date, flags)][-1]


def _python_dates(python: str) -> tuple[dt.date, dt.date]:
    """The first and last compatibility dates that give `python` without extra flags."""
    index = next(i for i, r in enumerate(PYTHON_RELEASES) if r.python == python)
    first = PYTHON_RELEASES[index].default_from
    assert first is not None and index + 1 < len(PYTHON_RELEASES)
    following = PYTHON_RELEASES[index + 1].default_from
    assert following is not None
    return first, following - dt.timedelta(days=1)


PYTHON_313_DATES = _python_dates(TARGET_PYTHON)
"""The `compatibility_date`s that give Python 3.13 with the pinned workerd: 2025-09-29 through
2026-08-24 (derived from `PYTHON_RELEASES`)."""

COMPATIBILITY_DATE = dt.date(2026, 8, 1)
"""The `compatibility_date` of this repository's wrangler.toml and of the projects `kumofire-jobs
init` writes: inside `PYTHON_313_DATES`."""

PLACEHOLDER_DATABASE_ID = "00000000-0000-0000-0000-000000000000"

MAX_SERVICE_CALLS_PER_BATCH = 31
"""Cloudflare allows 32 Worker invocations per request, the consumer's own and one per
service binding call: a batch of remote runs makes one call each."""


@dataclass(frozen=True)
class WranglerConfig:
    path: Path
    data: Mapping[str, Any]

    @property
    def directory(self) -> Path:
        return self.path.parent

    def tables(self, key: str) -> list[Mapping[str, Any]]:
        """An array of tables (`[[d1_databases]]`), keeping only the tables."""
        value = self.data.get(key, [])
        return [t for t in value if isinstance(t, Mapping)] if isinstance(value, list) else []

    def nested_tables(self, key: str, sub: str) -> list[Mapping[str, Any]]:
        """`[[queues.producers]]` and the like."""
        value = self.data.get(key, {})
        if not isinstance(value, Mapping):
            return []
        items = value.get(sub, [])
        return [t for t in items if isinstance(t, Mapping)] if isinstance(items, list) else []


def default_config_path(directory: Path | None = None) -> Path:
    """The config wrangler would read in `directory` (default: the current one)."""
    base = directory if directory is not None else Path.cwd()
    for name in CONFIG_NAMES:
        if (base / name).is_file():
            return base / name
    return base / CONFIG_NAMES[0]


def load_config(path: Path) -> WranglerConfig:
    if not path.is_file():
        raise DeployError(
            f"no wrangler config at {path}: run from the project's directory or pass "
            "--config FILE (wrangler.toml, wrangler.jsonc or wrangler.json)"
        )
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".json", ".jsonc"):
            data = json.loads(_strip_jsonc(text))
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise DeployError(f"{path}: not a valid wrangler config: {error}") from error
    if not isinstance(data, dict):
        raise DeployError(f"{path}: not a valid wrangler config: the top level is not a table")
    return WranglerConfig(path.resolve(), data)


_JSONC_TOKENS = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/|,(?=\s*[}\]])', re.DOTALL)


def _strip_jsonc(text: str) -> str:
    """JSON with comments and trailing commas (wrangler.jsonc) as plain JSON."""
    return _JSONC_TOKENS.sub(lambda m: m.group() if m.group().startswith('"') else "", text)


def d1_database(config: WranglerConfig, name: str) -> Mapping[str, Any]:
    """The `[[d1_databases]]` entry wrangler would pick for `name` (its `database_name` or its
    `binding`, as `wrangler d1 ...` accepts either)."""
    databases = config.tables("d1_databases")
    for database in databases:
        if database.get("database_name") == name:
            return database
    for database in databases:
        if database.get("binding") == name:
            return database
    if databases:
        listed = ", ".join(
            f"{d.get('database_name', '?')} (binding {d.get('binding', '?')})" for d in databases
        )
        known = f"the databases there are: {listed}"
    else:
        known = "it declares no [[d1_databases]]"
    raise DeployError(f"no D1 database named {name!r} in {config.path}: {known}")


# --- validation --------------------------------------------------------------------------------


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    code: str  # stable, for tests and searching: "compatibility-date", "queue-consumer", ...
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        return f"{self.severity}: [{self.code}] {self.message}"


def validate_config(config: WranglerConfig) -> list[Problem]:
    """Everything the Kumofire Jobs Worker needs from its wrangler config, each problem named."""
    problems: list[Problem] = []
    problems += _check_main(config)
    problems += _check_compatibility(config)
    problems += _check_d1(config)
    problems += _check_queues(config)
    problems += _check_coordinator(config)
    problems += _check_crons(config)
    problems += _check_remote_handlers(config)
    return problems


def _check_main(config: WranglerConfig) -> list[Problem]:
    main = config.data.get("main")
    if not isinstance(main, str) or not main:
        return [Problem("main", 'main is not set: the Worker entry, main = "src/entry.py"')]
    path = config.directory / main
    if not main.endswith(".py"):
        return [Problem("main", f"main = {main!r} is not a Python module (.py)")]
    if not path.is_file():
        return [Problem("main", f"main = {main!r}: no such file {path}")]
    return []


def _check_compatibility(config: WranglerConfig) -> list[Problem]:
    problems = []
    flags = config.data.get("compatibility_flags", [])
    if not isinstance(flags, list) or "python_workers" not in flags:
        problems.append(
            Problem(
                "compatibility-flags",
                'compatibility_flags lacks "python_workers": compatibility_flags = '
                '["python_workers"]',
            )
        )
    low, high = PYTHON_313_DATES
    wanted = (
        f"a compatibility_date from {low} up to {high} (Python {TARGET_PYTHON} with workerd "
        f"{PINNED_WORKERD}, the runtime wrangler dev uses)"
    )
    raw = config.data.get("compatibility_date")
    if raw is None:
        problems.append(Problem("compatibility-date", f"compatibility_date is not set: {wanted}"))
        return problems
    try:
        date = raw if isinstance(raw, dt.date) else dt.date.fromisoformat(str(raw))
    except ValueError:
        problems.append(
            Problem("compatibility-date", f"compatibility_date {raw!r} is not a date: {wanted}")
        )
        return problems
    listed = frozenset(f for f in flags if isinstance(f, str)) if isinstance(flags, list) else None
    release = python_release(date, listed or frozenset())
    if release.python == TARGET_PYTHON:
        return problems
    older = PYTHON_RELEASES.index(release) < [r.python for r in PYTHON_RELEASES].index(
        TARGET_PYTHON
    )
    why = (
        "an older Python"
        if older
        else "a newer Python, whose packages (msgspec) this runtime is not built against"
    )
    problems.append(
        Problem(
            "compatibility-date",
            f"compatibility_date {date} gives Python {release.python} (Pyodide "
            f"{release.pyodide}), {why}: use {wanted}",
        )
    )
    return problems


def _check_d1(config: WranglerConfig) -> list[Problem]:
    matches = [d for d in config.tables("d1_databases") if d.get("binding") == DB_BINDING]
    if not matches:
        return [
            Problem(
                "d1-binding",
                f"no [[d1_databases]] with binding = {DB_BINDING!r}: the jobs' database",
            )
        ]
    database = matches[0]
    problems = []
    if not database.get("database_name"):
        problems.append(Problem("d1-binding", f"the {DB_BINDING} database has no database_name"))
    database_id = database.get("database_id")
    if not database_id:
        problems.append(Problem("d1-binding", f"the {DB_BINDING} database has no database_id"))
    elif database_id == PLACEHOLDER_DATABASE_ID:
        problems.append(
            Problem(
                "d1-database-id",
                f"the {DB_BINDING} database_id is the placeholder: replace it with the id "
                f"`wrangler d1 create {database.get('database_name', 'NAME')}` prints",
                Severity.WARNING,
            )
        )
    raw_dir = database.get("migrations_dir", "migrations")  # wrangler's default
    directory = config.directory / str(raw_dir)
    where = f"{DB_BINDING} migrations_dir = {str(raw_dir)!r}"
    if not directory.is_dir():
        problems.append(Problem("d1-migrations", f"{where}: no such directory {directory}"))
        return problems
    try:
        theirs = {m.name: m.sql for m in discover_migrations(directory)}
        ours = discover_migrations(default_migrations_dir())
    except MigrationError as error:
        problems.append(Problem("d1-migrations", f"{where}: {error}"))
        return problems
    absent = [m.name for m in ours if m.name not in theirs]
    if absent:
        problems.append(
            Problem(
                "d1-migrations",
                f"{where}: lacks the Kumofire Jobs migrations {', '.join(absent)} (copy them "
                f"from {default_migrations_dir()})",
            )
        )
    changed = [m.name for m in ours if m.name in theirs and theirs[m.name] != m.sql]
    if changed:
        problems.append(
            Problem(
                "d1-migrations",
                f"{where}: {', '.join(changed)} differ from the Kumofire Jobs migrations of the "
                "same name",
            )
        )
    return problems


def _check_queues(config: WranglerConfig) -> list[Problem]:
    producers = [
        p for p in config.nested_tables("queues", "producers") if p.get("binding") == QUEUE_BINDING
    ]
    if not producers or not producers[0].get("queue"):
        return [
            Problem(
                "queue-producer",
                f"no [[queues.producers]] with binding = {QUEUE_BINDING!r} and its queue",
            )
        ]
    queue = producers[0]["queue"]
    consumers = [c for c in config.nested_tables("queues", "consumers") if c.get("queue") == queue]
    if not consumers:
        return [
            Problem(
                "queue-consumer",
                f"no [[queues.consumers]] for the {QUEUE_BINDING} queue {queue!r}: the Worker "
                "must consume the queue it produces to",
            )
        ]
    consumer = consumers[0]
    problems = []
    timeout = consumer.get("max_batch_timeout")
    if timeout is None:
        problems.append(
            Problem(
                "queue-batch-timeout",
                f"the consumer of {queue!r} has no max_batch_timeout, so it waits up to 5 s "
                "(the platform's default) to fill a batch: set max_batch_timeout = 0 for "
                "prompt delivery (the coordinator already timed the run)",
            )
        )
    elif not isinstance(timeout, int | float) or timeout > 0:
        problems.append(
            Problem(
                "queue-batch-timeout",
                f"the consumer of {queue!r} has max_batch_timeout = {timeout!r}: runs would "
                "start up to that many seconds late; set max_batch_timeout = 0 for prompt "
                "delivery (the coordinator already timed the run)",
            )
        )
    retries = consumer.get("max_retries")
    if retries is None:
        problems.append(
            Problem(
                "queue-retries",
                f"the consumer of {queue!r} does not set max_retries: set it (e.g. "
                "max_retries = 3) so redelivery is bounded and ends in the dead-letter queue",
            )
        )
    elif not isinstance(retries, int) or retries < 0:
        problems.append(Problem("queue-retries", f"max_retries = {retries!r} is not a count"))
    dead_letter = consumer.get("dead_letter_queue")
    if not dead_letter:
        problems.append(
            Problem(
                "queue-dead-letter",
                f"the consumer of {queue!r} has no dead_letter_queue: messages that exhaust "
                f'their retries would be dropped (e.g. dead_letter_queue = "{queue}-dlq")',
            )
        )
    elif dead_letter == queue:
        problems.append(
            Problem(
                "queue-dead-letter",
                f"the dead_letter_queue of {queue!r} is the queue itself: name another queue",
            )
        )
    return problems


def _check_coordinator(config: WranglerConfig) -> list[Problem]:
    bindings = [
        b
        for b in config.nested_tables("durable_objects", "bindings")
        if b.get("name") == COORDINATOR_BINDING
    ]
    if not bindings or not bindings[0].get("class_name"):
        return [
            Problem(
                "coordinator-binding",
                f"no [[durable_objects.bindings]] with name = {COORDINATOR_BINDING!r} and "
                "its class_name: the per-run coordinator",
            )
        ]
    binding = bindings[0]
    class_name = str(binding["class_name"])
    problems = []
    if binding.get("script_name"):
        problems.append(
            Problem(
                "coordinator-binding",
                f"{COORDINATOR_BINDING} has script_name = {binding['script_name']!r}: the "
                "coordinator class is defined by this Worker; remove script_name",
            )
        )
    storage = _class_storage(config, class_name)
    if storage is None:
        problems.append(
            Problem(
                "coordinator-migration",
                f"no [[migrations]] declares {class_name!r}: add a migration with "
                f'new_sqlite_classes = ["{class_name}"]',
            )
        )
    elif storage != "sqlite":
        problems.append(
            Problem(
                "coordinator-migration",
                f"{class_name!r} is declared in new_classes (key-value storage): the "
                "coordinator needs SQLite storage, new_sqlite_classes (a class cannot change "
                "its storage once deployed: for a new deployment, move it; else rename it)",
            )
        )
    problems += _check_class_defined(config, class_name)
    return problems


def _class_storage(config: WranglerConfig, class_name: str) -> str | None:
    """What the `[[migrations]]`, applied in order, leave `class_name` as: "sqlite", "kv", or
    None (never declared, or deleted)."""
    classes: dict[str, str] = {}
    for migration in config.tables("migrations"):
        for name in migration.get("new_sqlite_classes", []) or []:
            classes[str(name)] = "sqlite"
        for name in migration.get("new_classes", []) or []:
            classes[str(name)] = "kv"
        for rename in migration.get("renamed_classes", []) or []:
            if isinstance(rename, Mapping) and rename.get("from") in classes:
                classes[str(rename.get("to"))] = classes.pop(str(rename["from"]))
        for name in migration.get("deleted_classes", []) or []:
            classes.pop(str(name), None)
    return classes.get(class_name)


def _check_class_defined(config: WranglerConfig, class_name: str) -> list[Problem]:
    main = config.data.get("main")
    if not isinstance(main, str) or not (config.directory / main).is_file():
        return []  # reported by _check_main
    path = config.directory / main
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as error:
        return [Problem("main", f"{main}: {error}")]
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return []
        if isinstance(node, ast.ImportFrom | ast.Import):
            for alias in node.names:
                if (alias.asname or alias.name.split(".")[0]) == class_name:
                    return []
    return [
        Problem(
            "coordinator-class",
            f"{main} defines no class {class_name!r} (the {COORDINATOR_BINDING} class_name): "
            "the Worker must export the coordinator's Durable Object class",
        )
    ]


def _check_crons(config: WranglerConfig) -> list[Problem]:
    triggers = config.data.get("triggers", {})
    crons = triggers.get("crons", []) if isinstance(triggers, Mapping) else []
    if not isinstance(crons, list) or not any(isinstance(c, str) and c.strip() for c in crons):
        return [
            Problem(
                "cron-trigger",
                "no [triggers] crons: reconciliation and retention run on the cron trigger "
                '(crons = ["* * * * *"])',
            )
        ]
    return []


def _check_remote_handlers(config: WranglerConfig) -> list[Problem]:
    """`KUMOFIRE_REMOTE_HANDLERS` in `[vars]`: well formed, each route's binding declared in
    `[[services]]`, and queue batches small enough for one service binding call per run."""
    variables = config.data.get("vars", {})
    value = variables.get(REMOTE_HANDLERS_VAR) if isinstance(variables, Mapping) else None
    try:
        routes = parse_routes(value)
    except RemoteHandlersError as error:
        return [Problem("remote-handlers", str(error))]
    if not routes:
        return []
    problems = []
    services = {
        str(table.get("binding")): table
        for table in config.tables("services")
        if isinstance(table.get("binding"), str)
    }
    for route in routes.values():
        if route.binding not in services:
            problems.append(
                Problem(
                    "remote-handlers",
                    f"{REMOTE_HANDLERS_VAR} routes job {route.job!r} to {route.binding!r}, but "
                    f"no [[services]] has binding = {route.binding!r}: add one naming the "
                    "target Worker (service) and its WorkerEntrypoint class (entrypoint)",
                )
            )
    queues = {
        p.get("queue")
        for p in config.nested_tables("queues", "producers")
        if p.get("binding") == QUEUE_BINDING
    }
    sizes = [
        c.get("max_batch_size", 10)  # the platform's default batch size
        for c in config.nested_tables("queues", "consumers")
        if c.get("queue") in queues
    ]
    too_big = [
        size for size in sizes if isinstance(size, int) and size > MAX_SERVICE_CALLS_PER_BATCH
    ]
    if too_big:
        problems.append(
            Problem(
                "remote-handlers-batch",
                f"max_batch_size = {too_big[0]} with remote handlers: each remote run is one "
                "service binding call, and Cloudflare allows 32 Worker invocations per "
                f"request, so lower max_batch_size to {MAX_SERVICE_CALLS_PER_BATCH} or less",
                Severity.WARNING,
            )
        )
    return problems
