"""Jobs a database has work for that a runtime has no handler for: `kumofire-jobs dev` names
them at start, before its consumer fails their runs ("no handler is registered").

The usual cause is a data directory reused by another app (the demo's `.kumofire/` under a
reader's own `--app`). One query: the unfinished runs through their partial index, and the
schedules table, which is small.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from .bindings import D1Database
from .migrations import schema_version
from .store import SCHEDULES, TABLE

_RUNS = (
    f"SELECT name, COUNT(*) AS n, 0 AS schedules FROM {TABLE} WHERE finished_at IS NULL"
    " GROUP BY name"
)
_SCHEDULES = (
    f"SELECT name, 0 AS n, COUNT(*) AS schedules FROM {SCHEDULES} WHERE enabled = 1 GROUP BY name"
)
_SCHEDULES_SINCE = 2  # the schema version that added the schedules table


@dataclass(frozen=True)
class UnhandledJob:
    name: str
    unfinished_runs: int
    enabled_schedules: int

    def describe(self) -> str:
        parts = []
        if self.unfinished_runs:
            parts.append(_count(self.unfinished_runs, "unfinished run"))
        if self.enabled_schedules:
            parts.append(_count(self.enabled_schedules, "enabled schedule"))
        return f"{self.name} ({', '.join(parts)})"


async def unhandled_jobs(db: D1Database, handled: Collection[str]) -> list[UnhandledJob]:
    """The jobs, by name, with unfinished runs or enabled schedules but not in `handled`;
    none on a database without the schema yet."""
    version = await schema_version(db)
    if version == 0:
        return []
    sql = _RUNS if version < _SCHEDULES_SINCE else f"{_RUNS} UNION ALL {_SCHEDULES}"
    found: dict[str, tuple[int, int]] = {}
    for row in (await db.prepare(sql).all()).results:
        if row["name"] in handled:
            continue
        runs, schedules = found.get(row["name"], (0, 0))
        found[row["name"]] = (runs + int(row["n"]), schedules + int(row["schedules"]))
    return [
        UnhandledJob(name, runs, schedules) for name, (runs, schedules) in sorted(found.items())
    ]


def unhandled_warning(jobs: list[UnhandledJob], where: str) -> str | None:
    """The line `kumofire-jobs dev` prints for them, or None when there are none."""
    if not jobs:
        return None
    return (
        f"Warning: {where} has work for jobs this app has no handler for: "
        f"{'; '.join(job.describe() for job in jobs)}. Their runs will fail "
        "(no handler is registered); serve the app they belong to, or give this one its own "
        "--data-dir."
    )


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"
