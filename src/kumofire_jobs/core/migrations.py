"""The schema migrator: numbered SQL files applied through any `D1Database`.

It keeps wrangler's own record of applied migrations (the `d1_migrations` table, with the DDL
and the file-name rows `wrangler d1 migrations apply` writes), so this migrator and wrangler
can each follow the other on the same database. Each migration runs as ONE `db.batch`
(its record first, then its statements): D1 runs a batch as one transaction, so a failed
migration leaves nothing half-applied. Only the `D1Database` protocol is used here, never
sqlite3 or the local bindings, so it runs against the platform's D1 as well.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import msgspec

from kumofire_jobs.core.bindings import D1Database

__all__ = [
    "MIGRATIONS_TABLE",
    "SCHEMA_VERSION",
    "Migration",
    "MigrationError",
    "SchemaOutdatedError",
    "apply_migrations",
    "check_schema",
    "default_migrations_dir",
    "discover_migrations",
    "pending_migrations",
    "schema_version",
    "split_sql",
    "sql_tokens",
]

SCHEMA_VERSION: int = 7
"""The migration number this code expects the database to be at."""

MIGRATIONS_TABLE = "d1_migrations"

# Byte for byte what the pinned wrangler (4.125.0) runs (getCreateMigrationsTableQuery, which
# quotes the name; 4.86.0 did not), so that `sqlite_master` reads the same whichever tool
# created the table.
_MIGRATIONS_TABLE_DDL = (
    'CREATE TABLE IF NOT EXISTS "d1_migrations"(\n'
    "\t\tid         INTEGER PRIMARY KEY AUTOINCREMENT,\n"
    "\t\tname       TEXT UNIQUE,\n"
    "\t\tapplied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL\n"
    ");"
)

# wrangler orders by the integer before the first "_" and records the whole file name.
_FILE_RE = re.compile(r"^(\d+)_[^/\\]+\.sql$")


class Migration(msgspec.Struct, frozen=True):
    number: int
    name: str  # the file name, e.g. "0001_job_runs.sql", as recorded in d1_migrations
    sql: str


class MigrationError(Exception):
    """The migrations directory or a migration file cannot be used as it is."""


class SchemaOutdatedError(RuntimeError):
    """The database's schema is older than this code needs."""

    def __init__(self, current: int, expected: int) -> None:
        self.current = current
        self.expected = expected
        super().__init__(
            f"the D1 schema is at version {current} but this code needs version {expected}: "
            "apply the migrations with `kumofire-jobs migrate` (local database) or "
            "`kumofire-jobs cloudflare migrate --remote --database NAME` (Cloudflare D1)"
        )


def default_migrations_dir() -> Path:
    """The shipped migrations: inside the package when installed from a wheel (pyproject
    force-includes them as `kumofire_jobs/migrations`), else the repository's `migrations/`."""
    package = Path(__file__).resolve().parent.parent  # kumofire_jobs/
    packaged = package / "migrations"
    if packaged.is_dir():
        return packaged
    return package.parent.parent / "migrations"


def discover_migrations(directory: str | Path | None = None) -> list[Migration]:
    """The migration files of `directory`, in the order wrangler applies them."""
    root = Path(directory) if directory is not None else default_migrations_dir()
    if not root.is_dir():
        raise MigrationError(f"no migrations directory at {root}")
    found: dict[int, Migration] = {}
    for path in root.iterdir():
        if not path.name.endswith(".sql"):
            continue
        match = _FILE_RE.match(path.name)
        if match is None:
            # wrangler would apply any *.sql file; refuse rather than let the two tools diverge.
            raise MigrationError(f"{path}: migration files are named NNNN_name.sql")
        number = int(match.group(1))
        if number in found:
            raise MigrationError(
                f"{path}: migration number {number} is also used by {found[number].name}"
            )
        found[number] = Migration(number, path.name, path.read_text(encoding="utf-8"))
    return [found[n] for n in sorted(found)]


async def _applied_names(db: D1Database) -> list[str]:
    exists = await (
        db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?")
        .bind(MIGRATIONS_TABLE)
        .first()
    )
    if exists is None:
        return []
    result = await db.prepare(f"SELECT name FROM {MIGRATIONS_TABLE} ORDER BY id").all()
    return [str(row["name"]) for row in result.results]


async def pending_migrations(
    db: D1Database, directory: str | Path | None = None
) -> list[Migration]:
    """The migrations of `directory` not yet recorded as applied in `db`."""
    migrations = discover_migrations(directory)
    applied = set(await _applied_names(db))
    return [m for m in migrations if m.name not in applied]


async def apply_migrations(db: D1Database, directory: str | Path | None = None) -> list[Migration]:
    """Apply every pending migration, each atomically; returns those applied, in order."""
    migrations = discover_migrations(directory)  # fail on a bad directory before writing
    await db.prepare(_MIGRATIONS_TABLE_DDL).run()
    applied = set(await _applied_names(db))
    done: list[Migration] = []
    for migration in migrations:
        if migration.name in applied:
            continue
        statements = split_sql(_strip_transaction(migration))
        # The record goes first: if another migrator raced us to this migration, the batch
        # fails on the UNIQUE name (a clear message) and the whole migration rolls back.
        batch = [
            db.prepare(f"INSERT INTO {MIGRATIONS_TABLE} (name) VALUES (?)").bind(migration.name),
            *(db.prepare(statement) for statement in statements),
        ]
        await db.batch(batch)
        done.append(migration)
    return done


async def schema_version(db: D1Database) -> int:
    """The highest applied migration number, 0 when none is."""
    numbers = [int(m.group(1)) for m in map(_FILE_RE.match, await _applied_names(db)) if m]
    return max(numbers, default=0)


async def check_schema(db: D1Database) -> None:
    """Raise `SchemaOutdatedError` when the schema is older than `SCHEMA_VERSION`.

    A newer schema passes: migrations are additive, and during a deploy the old code runs
    for a while against the migrated database.
    """
    current = await schema_version(db)
    if current < SCHEMA_VERSION:
        raise SchemaOutdatedError(current, SCHEMA_VERSION)


def _strip_transaction(migration: Migration) -> str:
    # As wrangler does (src/d1/trimmer.ts): SQLite dumps wrap themselves in a transaction,
    # which D1 rejects; the batch is the transaction.
    sql = migration.sql
    if "BEGIN TRANSACTION" not in sql:
        return sql
    sql = sql.replace("BEGIN TRANSACTION;", "", 1).replace("COMMIT;", "", 1)
    if "BEGIN TRANSACTION" in sql:
        raise MigrationError(
            f"{migration.name}: contains several transactions; D1 runs each migration in one"
        )
    return sql


# --- SQL text -------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
      (?P<ws>\s+)
    | (?P<line_comment>--[^\n]*(?:\n|\Z))
    | (?P<block_comment>/\*.*?(?:\*/|\Z))
    | (?P<string>'[^']*(?:''[^']*)*(?:'|\Z))
    | (?P<quoted>"[^"]*(?:""[^"]*)*(?:"|\Z)|`[^`]*(?:``[^`]*)*(?:`|\Z)|\[[^\]]*(?:\]|\Z))
    | (?P<param>\?[0-9]*|[:@$][A-Za-z0-9_$]+)
    | (?P<word>[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*)
    | (?P<semi>;)
    | (?P<other>.)
    """,
    re.DOTALL | re.VERBOSE,
)


def sql_tokens(sql: str) -> Iterator[tuple[str, str]]:
    """(kind, text) tokens of SQLite SQL. Kinds: ws, line_comment, block_comment, string,
    quoted (a quoted identifier), param, word, semi, other. Unterminated quotes and
    comments run to the end, as in SQLite's tokenizer."""
    for match in _TOKEN_RE.finditer(sql):
        kind = match.lastgroup
        assert kind is not None
        yield kind, match.group()


# sqlite3_complete()'s state machine (SQLite's complete.c), which knows that the semicolons
# inside CREATE TRIGGER ... BEGIN ... END are not statement ends.
_SEMI, _WS, _OTHER, _EXPLAIN, _CREATE, _TEMP, _TRIGGER, _END = range(8)
_TRANSITIONS = (
    # SEMI WS OTHER EXPLAIN CREATE TEMP TRIGGER END
    (1, 0, 2, 3, 4, 2, 2, 2),  # 0 invalid
    (1, 1, 2, 3, 4, 2, 2, 2),  # 1 start
    (1, 2, 2, 2, 2, 2, 2, 2),  # 2 normal
    (1, 3, 3, 2, 4, 2, 2, 2),  # 3 explain
    (1, 4, 2, 2, 2, 4, 5, 2),  # 4 create
    (6, 5, 5, 5, 5, 5, 5, 5),  # 5 trigger
    (6, 6, 5, 5, 5, 5, 5, 7),  # 6 semi
    (1, 7, 5, 5, 5, 5, 5, 5),  # 7 end
)
_KEYWORDS = {
    "explain": _EXPLAIN,
    "create": _CREATE,
    "temp": _TEMP,
    "temporary": _TEMP,
    "trigger": _TRIGGER,
    "end": _END,
}
_WS_KINDS = frozenset({"ws", "line_comment", "block_comment"})


def split_sql(sql: str, *, strip_comments: bool = True) -> list[str]:
    """Split SQL into its statements, without the separating semicolons.

    Semicolons in strings, quoted names, comments and trigger bodies do not split. With
    `strip_comments`, comments go as wrangler's splitter drops them (a line comment becomes
    a newline, a block comment nothing), so the CREATE texts SQLite stores in
    `sqlite_master` match what `wrangler d1 migrations apply` produces. Statements that are
    only whitespace and comments are left out.
    """
    statements: list[str] = []
    parts: list[str] = []
    has_content = False
    state = 0
    for kind, text in sql_tokens(sql):
        if kind in _WS_KINDS:
            token = _WS
            if strip_comments and kind == "line_comment":
                text = "\n"
            elif strip_comments and kind == "block_comment":
                text = ""
        elif kind == "semi":
            token = _SEMI
        elif kind == "word":
            token = _KEYWORDS.get(text.lower(), _OTHER)
        else:
            token = _OTHER
        state = _TRANSITIONS[state][token]
        if token == _SEMI and state == 1:
            if has_content:
                statements.append("".join(parts).strip())
            parts, has_content = [], False
            continue
        parts.append(text)
        has_content = has_content or token != _WS
    if has_content:
        statements.append("".join(parts).strip())
    return statements
