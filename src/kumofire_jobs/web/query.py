"""The HTTP API's query parameters: read as the jobs API expects them, refused with its
validation error otherwise. A parameter given with no value (`?status=`) is refused too,
naming it: no status, name or id is empty, so it can only be a client's mistake, and reading
it as absent would answer every run for a filter that meant some. So is one given twice: one
value would be read, a subset of what `?status=a&status=b` may have meant. A parameter the
route does not know is ignored (as most HTTP APIs do; bodies, which the OpenAPI document
lists field by field, refuse unknown fields)."""

from __future__ import annotations

from starlette.requests import Request

from ..core import validation
from ..core.errors import ValidationError

__all__ = ["query_bool", "query_limit", "query_str"]


def _given(request: Request, name: str) -> str | None:
    """The parameter's value; None when absent; a 422 naming it when present but empty, or
    given more than once (only one value is read: `?status=a&status=b` is no "either")."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ValidationError(f"query parameter {name} is given {len(values)} times: give it once")
    value = values[0] if values else None
    if value == "":
        raise ValidationError(f"query parameter {name} is empty: give a value or leave it out")
    return value


def query_limit(request: Request) -> int:
    """`limit`, validated by the jobs API (1 to 200); 50 when absent."""
    value = _given(request, "limit")
    if value is None:
        return validation.DEFAULT_LIST_LIMIT
    # ASCII digits only: int() also reads "+5", " 5", "1_0" and other scripts' digits.
    digits = value[1:] if value.startswith("-") else value
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 6:
        raise ValidationError("limit must be an integer from 1 to 200")
    return int(value)


def query_str(request: Request, name: str) -> str | None:
    return _given(request, name)


def query_bool(request: Request, name: str) -> bool | None:
    value = _given(request, name)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise ValidationError(f"{name} must be true or false")
    return value == "true"
