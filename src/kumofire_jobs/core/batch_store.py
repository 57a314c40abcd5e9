"""The statements of a consumer batch: the starts of its runs folded into one guarded
statement, and the outcomes its handlers record at about the same time into one (per kind).

Each is the per-run statement of `store.py` joined to a list bound as one JSON array
(`UPDATE ... FROM (SELECT ... FROM json_each(?)) ... RETURNING`): the same guard and fence for
every row, each row with its own token and values, and `RETURNING` says which rows matched. A
row that matched nothing is answered as the per-run statement would answer it (None, False),
and its caller reads the row to learn why, as it does today.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import msgspec

from .bindings import D1PreparedStatement
from .run_rows import AttemptWrite, StartedRow
from .states import RunStatus
from .store import (
    STARTED_COLUMNS,
    TABLE,
    RunStore,
    start_changes,
    start_guard,
    unless_jobs,
)

__all__ = ["MAX_LIST_BYTES", "OutcomeRow", "start_many", "write_outcomes"]

# A bound value holds at most 1,000,000 bytes on D1 (a string, a BLOB or a row): a list past
# this is cut into several statements (of one `batch()`). One outcome's history is at most
# `history.MAX_HISTORY_BYTES` (about 212 KB; twice that escaped inside the list).
MAX_LIST_BYTES = 900_000

# The runs to start: (run id, the lease's token) pairs, ?2.
_STARTING = (
    "(SELECT json_extract(value, '$[0]') AS run_id, json_extract(value, '$[1]') AS token "
    "FROM json_each(?2)) AS l"
)
_START_MANY = (
    f"UPDATE {TABLE} SET {start_changes('l.token')} FROM {_STARTING} "
    f"WHERE {TABLE}.id = l.run_id AND {start_guard('l.token')} RETURNING {STARTED_COLUMNS}"
)
_START_MANY_UNLIMITED = _START_MANY.replace("RETURNING", f"AND {unless_jobs('?3')} RETURNING")


def _outcomes(*columns: str) -> str:
    """The outcomes to write (?1): each a JSON object, its fields as columns of `o`."""
    fields = ", ".join(f"json_extract(value, '$.{c}') AS {c}" for c in columns)
    return f"(SELECT {fields} FROM json_each(?1)) AS o"


# The outcome statements of `store.py` (`_FINISH`, `_RESCHEDULE`), fenced per row alike: the
# row is `running` under the writer's token. `o`'s columns share names with the table's, so
# every column of the WHERE is qualified.
_FENCE = f"{TABLE}.id = o.run_id AND {TABLE}.status = 'running' AND {TABLE}.lease_token = o.token"
_FINISH_MANY = (
    f"UPDATE {TABLE} SET status = o.status, updated_at = o.at, finished_at = o.at, "
    "last_error = o.error, attempts = o.attempts, logs = o.logs, progress = o.progress, "
    "result = o.result FROM "
    + _outcomes(
        "run_id", "token", "status", "at", "error", "attempts", "logs", "progress", "result"
    )
    + f" WHERE {_FENCE} RETURNING id, lease_token"
)
_RESCHEDULE_MANY = (
    f"UPDATE {TABLE} SET status = 'scheduled', updated_at = o.at, scheduled_for = o.due, "
    "last_error = o.error, attempts = o.attempts, logs = o.logs, progress = o.progress FROM "
    + _outcomes("run_id", "token", "at", "due", "error", "attempts", "logs", "progress")
    + f" WHERE {_FENCE} RETURNING id, lease_token"
)

_encoder = msgspec.json.Encoder()


async def start_many(
    store: RunStore, runs: Sequence[tuple[str, int]], now: int, *, unless: str | None
) -> dict[str, StartedRow]:
    """Start `runs` ((run id, token) pairs, one per run) in one statement, as `store.start`
    starts one: the rows it started, by run id. `unless`: `store.start`'s `unless_jobs`."""
    if len(runs) == 1:  # the per-run statement: a batch of one costs what it did
        run_id, token = runs[0]
        row = await store.start(run_id, token, now, unless_jobs=unless)
        return {} if row is None else {run_id: row}
    listed = _encoder.encode([[run_id, token] for run_id, token in runs]).decode()
    if unless is None:
        stmt = store.db.prepare(_START_MANY).bind(now, listed)
    else:
        stmt = store.db.prepare(_START_MANY_UNLIMITED).bind(now, listed, unless)
    rows = (await stmt.all()).results
    return {row["id"]: cast(StartedRow, row) for row in rows}


class OutcomeRow(msgspec.Struct, frozen=True):
    """One attempt's outcome as `store.finish` (`due` None) or `store.reschedule` writes it."""

    run_id: str
    token: int
    status: RunStatus  # succeeded, failed, or scheduled (a retry, due at `due`)
    at: int  # epoch ms
    error: str | None
    history: AttemptWrite
    due: int | None = None


async def write_outcomes(store: RunStore, rows: Sequence[OutcomeRow]) -> set[tuple[str, int]]:
    """Write `rows`, each fenced by its token, in one statement per kind (in one `batch()`
    when there are more): the (run id, token) pairs whose row was written."""
    if len(rows) == 1:  # the per-run statement: a lone outcome costs what it did
        row = rows[0]
        if row.due is None:
            written = await store.finish(
                row.run_id, row.token, row.status, row.at, row.error, row.history
            )
        else:
            written = await store.reschedule(
                row.run_id, row.token, row.at, row.due, row.error, row.history
            )
        return {(row.run_id, row.token)} if written else set()
    statements = [
        *_statements(store, _FINISH_MANY, [_finished(r) for r in rows if r.due is None]),
        *_statements(store, _RESCHEDULE_MANY, [_rescheduled(r) for r in rows if r.due is not None]),
    ]
    if len(statements) == 1:
        results = [await statements[0].all()]
    else:
        results = await store.db.batch(statements)
    return {(str(r["id"]), int(r["lease_token"])) for result in results for r in result.results}


def _finished(row: OutcomeRow) -> bytes:
    h = row.history
    return _encoder.encode({
        "run_id": row.run_id, "token": row.token, "status": row.status.value, "at": row.at,
        "error": row.error, "attempts": h.attempts, "logs": h.logs, "progress": h.progress,
        "result": h.result,
    })  # fmt: skip


def _rescheduled(row: OutcomeRow) -> bytes:
    h = row.history
    return _encoder.encode({
        "run_id": row.run_id, "token": row.token, "at": row.at, "due": row.due,
        "error": row.error, "attempts": h.attempts, "logs": h.logs, "progress": h.progress,
    })  # fmt: skip


def _statements(store: RunStore, sql: str, items: list[bytes]) -> list[D1PreparedStatement]:
    """`sql` over `items` (each one row's JSON), cut into lists of at most `MAX_LIST_BYTES`."""
    lists: list[list[bytes]] = []
    size = 0
    for item in items:
        if not lists or size + len(item) + 1 > MAX_LIST_BYTES:
            lists.append([])
            size = 1
        lists[-1].append(item)
        size += len(item) + 1
    return [store.db.prepare(sql).bind((b"[" + b",".join(part) + b"]").decode()) for part in lists]
