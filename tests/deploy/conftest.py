"""Fixtures for the deploy-side tools' tests: a project directory to break one piece at a
time, and wrangler's state kept out of the home directory (the repository's paths and its
wrangler: tests/support/deploy.py)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.deploy import REPO, ProjectFactory, repo_config


@pytest.fixture
def make_project(tmp_path: Path) -> ProjectFactory:
    """`make_project(change=None, entry=None)`: a project with the repository's config (as
    wrangler.json, so a test can change any part of it), its migrations, and an entry that
    defines the coordinator class. Returns the config's path."""
    count = 0

    def make(
        change: Callable[[dict[str, Any]], None] | None = None, *, entry: str | None = None
    ) -> Path:
        nonlocal count
        count += 1
        root = tmp_path / f"project{count}"
        (root / "src").mkdir(parents=True)
        shutil.copytree(REPO / "migrations", root / "migrations")
        (root / "src" / "entry.py").write_text(
            entry if entry is not None else "class JobCoordinator:\n    pass\n",
            encoding="utf-8",
        )
        config = repo_config()
        if change is not None:
            change(config)
        path = root / "wrangler.json"
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        return path

    return make


@pytest.fixture
def wrangler_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep wrangler's config, logs and consent files under the test's directory."""
    home = tmp_path / "wrangler-home"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("WRANGLER_LOG_PATH", str(home / "logs"))
    monkeypatch.setenv("WRANGLER_SEND_METRICS", "false")
    return home
