"""A request body's JSON, decoded, or the 400 `invalid_json` saying what is wrong with it; a
body declared as something else than JSON, the 415 `unsupported_media_type`."""

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


def check_media_type(content_type: str | None) -> None:
    """A body must be declared JSON (`application/json`, or a `+json` type) or not declared at
    all (a program's raw body). A form or text body is refused, not read as JSON: curl's `-d`
    without `-H 'content-type: application/json'` gets told what to send."""
    if content_type is None:
        return
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return
    shown = media_type[:100] or "(empty)"
    raise ApiError(
        415,
        "unsupported_media_type",
        f"the body must be JSON, sent with content-type: application/json (not {shown})",
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
