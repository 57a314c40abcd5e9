"""The repository and its wrangler, for the deploy-side tools' tests (tests/deploy/; its
conftest.py makes the projects they break one piece at a time)."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
WRANGLER = REPO / "node_modules" / ".bin" / "wrangler"

needs_wrangler = pytest.mark.skipif(
    not WRANGLER.exists(),
    reason="wrangler is not installed: run `npm install` at the repository root",
)


def repo_config() -> dict[str, Any]:
    with (REPO / "wrangler.toml").open("rb") as file:
        return tomllib.load(file)


ProjectFactory = Callable[..., Path]
