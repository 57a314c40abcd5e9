"""How the ops commands print: the API's JSON (`--json`), or aligned tables for a person.

Tables never shorten an id, a key or a name (they are copied into the next command); only
free text (an error, a payload) is cut to one line. Times are UTC, to the second, with `Z`.

Whoever can create a run chooses its keys, payload and error text: control characters in
them are printed escaped (`\u001b`), never raw, so none reaches the terminal as an escape
sequence (clearing the screen, setting its title) or as a line break faking a table row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec

from ..core.times import format_rfc3339

# C0 but the line break, DEL and C1: what a terminal may act on. JSON escapes these the same
# way, so `--json` output stays the same JSON.
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")

TEXT_WIDTH = 60
"""Free text in a table cell (an error, a payload) is cut to this many characters."""


def safe(text: str) -> str:
    """`text` with every control character but the line break as a `\\uXXXX` escape."""
    return _CONTROL.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def plain(value: Any) -> Any:
    """A result of the jobs API (Structs, enums, datetimes) as the HTTP API's JSON: the same
    field names, times as RFC 3339 UTC with milliseconds."""
    return _times(msgspec.to_builtins(value, builtin_types=(datetime,)))


def _times(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_rfc3339(value)
    if isinstance(value, dict):
        return {key: _times(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_times(item) for item in value]
    return value


def dumps(value: Any) -> str:
    return json.dumps(plain(value), indent=2, ensure_ascii=False)


def when(value: Any) -> str:
    """An RFC 3339 time as `2026-12-07 13:00:05Z`; `-` for none."""
    if value is None:
        return "-"
    text = str(value)
    return text[:10] + " " + text[11:19] + "Z" if len(text) >= 19 else text


def line(value: Any, width: int = TEXT_WIDTH) -> str:
    """Free text (or any JSON value) on one line, cut to `width`; `-` for none."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    first = " ".join(text.split())
    return first if len(first) <= width else first[: width - 1] + "…"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns aligned by the widest cell, two spaces apart; the last column is not padded."""
    # One line a row: a line break in a cell is shown as `\n`, like the other controls.
    cells = [list(headers)]
    cells += ([safe(str(cell).replace("\n", "\\n")) for cell in row] for row in rows)
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def fields(record: Mapping[str, Any], json_fields: Iterable[str] = ()) -> str:
    """One record, a field a line: `name  value`. Times as in tables; JSON values (payload,
    result) and multi-line text (an error's traceback) in full, indented under the name."""
    width = max(len(name) for name in record)
    shown = set(json_fields)
    lines: list[str] = []
    for name, value in record.items():
        if name in shown and value is not None:
            text = json.dumps(value, indent=2, ensure_ascii=False)
        elif isinstance(value, str) and _is_time(value):
            text = when(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = "-" if value is None else str(value)
        first, *rest = text.split("\n")
        lines.append(f"{name.ljust(width)}  {first}".rstrip())
        lines.extend(" " * (width + 2) + more for more in rest)
    return "\n".join(lines)


def _is_time(text: str) -> bool:
    return len(text) == 24 and text[10] == "T" and text.endswith("Z")
