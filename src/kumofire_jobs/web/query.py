"""The HTTP API's query parameters: read as the jobs API expects them, refused with its
validation error otherwise."""

from __future__ import annotations

from starlette.requests import Request

from ..core import validation
from ..core.errors import ValidationError

__all__ = ["query_bool", "query_limit", "query_str"]


def query_limit(request: Request) -> int:
    """`limit`, validated by the jobs API (1 to 200); 50 when absent."""
    value = request.query_params.get("limit")
    if value is None or value == "":
        return validation.DEFAULT_LIST_LIMIT
    # ASCII digits only: int() also reads "+5", " 5", "1_0" and other scripts' digits.
    digits = value[1:] if value.startswith("-") else value
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 6:
        raise ValidationError("limit must be an integer from 1 to 200")
    return int(value)


def query_str(request: Request, name: str) -> str | None:
    return request.query_params.get(name) or None


def query_bool(request: Request, name: str) -> bool | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if value not in ("true", "false"):
        raise ValidationError(f"{name} must be true or false")
    return value == "true"
