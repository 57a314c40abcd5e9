"""A request body's JSON, decoded, or the 400 `invalid_json` saying what is wrong with it."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from ..core import validation
from ..core.errors import ValidationError
from .responses import ApiError

# A `\uD800`-`\uDBFF` escape (its backslash not itself escaped) with no `\uDC00`-`\uDFFF`
# escape after it: msgspec reports that as "Input data was truncated", as if the body were
# cut short. A lone low surrogate it reports as an invalid surrogate pair already.
_LONE_HIGH_SURROGATE = re.compile(
    rb"(?<!\\)(?:\\\\)*(\\u[dD][89abAB][0-9a-fA-F]{2})(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)


def decode_json(data: bytes) -> Any:
    try:
        return msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # bad UTF-8 in a string
        reason = _reason(data, exc)
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {reason}") from None
    except RecursionError:
        raise ValidationError(
            "the body nests too deeply to read "
            f"(a payload may nest at most {validation.MAX_PAYLOAD_DEPTH} levels)"
        ) from None


def _reason(data: bytes, exc: Exception) -> str:
    if "truncated" in str(exc) and (lone := _LONE_HIGH_SURROGATE.search(data)) is not None:
        escape = lone.group(1).decode()
        return (
            f"a string holds a lone UTF-16 surrogate escape ({escape} at byte {lone.start(1)}, "
            "with no low surrogate escape after it), which is no Unicode character"
        )
    return str(exc)
