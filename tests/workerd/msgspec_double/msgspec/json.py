"""msgspec.json, as far as the Worker path uses it: compact UTF-8 JSON bytes, datetimes as
RFC 3339, enums by value, Structs as objects; NaN and infinities as null."""

from __future__ import annotations

import datetime
import enum
import json as _json
import math
import re
from typing import Any

__all__ = ["Decoder", "Encoder", "decode", "encode"]


def _builtins(obj: Any) -> Any:
    from . import Struct

    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else float(obj)
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if isinstance(key, str):
                name = key
            elif isinstance(key, int) and not isinstance(key, bool):
                name = str(key)
            elif isinstance(key, enum.Enum):
                name = str(key.value)
            else:
                raise TypeError("Only dicts with str-like or number-like keys are supported")
            out[name] = _builtins(value)
        return out
    if isinstance(obj, list | tuple | set | frozenset):
        return [_builtins(item) for item in obj]
    if isinstance(obj, Struct):
        return {name: _builtins(getattr(obj, name)) for name in obj.__struct_fields__}
    if isinstance(obj, enum.Enum):
        return _builtins(obj.value)
    if isinstance(obj, datetime.datetime):
        return _datetime(obj)
    if isinstance(obj, datetime.date):
        return obj.isoformat()
    if isinstance(obj, bytes | bytearray | memoryview):
        import base64

        return base64.b64encode(bytes(obj)).decode()
    raise TypeError(f"Encoding objects of type {type(obj).__name__} is unsupported")


def _datetime(value: datetime.datetime) -> str:
    text = value.isoformat()
    offset = value.utcoffset()
    if offset is not None and offset == datetime.timedelta(0):
        text = text[: -len("+00:00")] + "Z"
    return text


def encode(obj: Any, *, enc_hook: Any = None, order: Any = None) -> bytes:
    if enc_hook is not None or order is not None:
        raise NotImplementedError("the msgspec test double has no enc_hook or order")
    return _json.dumps(
        _builtins(obj), ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")


class Encoder:
    def encode(self, obj: Any) -> bytes:
        return encode(obj)


def decode(buf: bytes | bytearray | memoryview | str, *, type: Any = None) -> Any:
    from . import DecodeError, convert

    if isinstance(buf, bytes | bytearray | memoryview):
        try:
            text = bytes(buf).decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("JSON is malformed: invalid utf-8") from None
    else:
        text = buf
    try:
        value = _json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise DecodeError(f"JSON is malformed: {exc}") from None
    if "\\u" in text and (problem := _lone_surrogate(text)) is not None:
        raise DecodeError(problem)
    return value if type is None else convert(value, type)


# An escaped backslash, or a \uXXXX escape: scanning left to right, a backslash that is itself
# escaped never starts an escape.
_ESCAPE = re.compile(r"\\\\|\\u([0-9a-fA-F]{4})")


def _lone_surrogate(text: str) -> str | None:
    """msgspec's words for a \\uXXXX surrogate escape without its other half (the json
    module decodes one into a lone surrogate): a high one followed by anything but an escape
    is "Input data was truncated"; followed by another escape, or a lone low one, is an
    invalid pair."""
    paired_low = -1
    for match in _ESCAPE.finditer(text):
        if match.group(1) is None or match.start() == paired_low:
            continue
        code = int(match.group(1), 16)
        if 0xD800 <= code <= 0xDBFF:
            after = _ESCAPE.match(text, match.end())
            if after is None or after.group(1) is None:
                return "Input data was truncated"
            if not 0xDC00 <= int(after.group(1), 16) <= 0xDFFF:
                return f"JSON is malformed: invalid utf-16 surrogate pair (byte {after.end()})"
            paired_low = after.start()
        elif 0xDC00 <= code <= 0xDFFF:
            return f"JSON is malformed: invalid utf-16 surrogate pair (byte {match.end()})"
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid constant {name}")


class Decoder:
    def __init__(self, type: Any = None) -> None:
        self.type = type

    def decode(self, buf: bytes | str) -> Any:
        return decode(buf, type=self.type)
