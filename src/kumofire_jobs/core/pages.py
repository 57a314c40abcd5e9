"""Pages of a table, newest first: keyset pagination over the primary key (ids sort by
creation), with the opaque cursors the API hands out."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from .bindings import D1Database
from .errors import ValidationError


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = base64.urlsafe_b64decode(padded.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValidationError("cursor is not one this API returned") from None
    if not value.startswith(("run_", "sch_")):
        raise ValidationError("cursor is not one this API returned")
    return value


async def keyset_page(
    db: D1Database,
    table: str,
    columns: str,
    filters: dict[str, Any],
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Rows newest first (ids sort by creation), equal to every non-None filter, after the
    cursor; and the cursor of the next page, or None on the last one."""
    where = [f"{column} = ?" for column, value in filters.items() if value is not None]
    args: list[Any] = [value for value in filters.values() if value is not None]
    if cursor is not None:
        where.append("id < ?")
        args.append(decode_cursor(cursor))
    sql = f"SELECT {columns} FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = (
        await db.prepare(sql + " ORDER BY id DESC LIMIT ?").bind(*args, limit + 1).all()
    ).results
    next_cursor = encode_cursor(rows[limit - 1]["id"]) if len(rows) > limit else None
    return rows[:limit], next_cursor
