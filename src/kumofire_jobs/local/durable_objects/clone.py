"""The structured clone: what crosses RPC and storage, and storage's encoding of it."""

from __future__ import annotations

from typing import Any

import msgspec

from .errors import DataCloneError


def structured_clone(value: Any) -> Any:
    """A deep copy limited to what crosses RPC and storage: dict (str keys), list, str, int,
    float, bool, None, bytes. Tuples arrive as lists; anything else raises DataCloneError."""
    if type(value) in _ATOMS:
        return value
    try:
        return _clone(value)
    except RecursionError:
        raise DataCloneError("value is cyclic or nested too deeply to clone") from None


# Immutable values that cross as they are (checked by exact type: subclasses are converted).
_ATOMS = frozenset({str, int, float, bool, type(None), bytes})


def _clone(value: Any) -> Any:
    kind = type(value)
    if kind in _ATOMS:
        return value
    atoms = _ATOMS
    if kind is dict:
        out: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                if not isinstance(key, str):
                    raise DataCloneError(f"dict keys must be strings, not {type(key).__name__}")
                key = str(key)
            out[key] = item if type(item) in atoms else _clone(item)
        return out
    if kind is list or kind is tuple:
        return [item if type(item) in atoms else _clone(item) for item in value]
    # Subclasses (str and int enums, dict subclasses) cross as their base value, as Pyodide
    # converts them.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, dict):
        return _clone(dict(value))
    if isinstance(value, list | tuple):
        return [_clone(item) for item in value]
    raise DataCloneError(f"{kind.__name__} object could not be cloned")


def encode(value: Any) -> bytes:
    try:
        return msgspec.msgpack.encode(structured_clone(value))
    except OverflowError:
        raise DataCloneError("an integer beyond 64 bits could not be cloned into storage") from None


decode = msgspec.msgpack.decode
