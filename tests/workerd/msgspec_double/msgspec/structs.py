"""msgspec.structs, as far as the Worker path uses it."""

from __future__ import annotations

from typing import Any


def asdict(struct: Any) -> dict[str, Any]:
    return {name: getattr(struct, name) for name in struct.__struct_fields__}
