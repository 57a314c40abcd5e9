"""The two distributions' metadata, and the values written in more than one file that must stay
equal. (scripts/test-package builds, installs and runs the packages themselves.)"""

from __future__ import annotations

import json
import tomllib
from importlib import metadata
from pathlib import Path

import kumofire_coordinator
import kumofire_jobs
from kumofire_jobs.deploy.config import COMPATIBILITY_DATE, PINNED_WRANGLER, PYTHON_313_DATES

ROOT = Path(__file__).resolve().parent.parent


def pyproject(path: Path) -> dict[str, object]:
    with path.open("rb") as file:
        return tomllib.load(file)


def test_one_release_of_both_distributions() -> None:
    version = kumofire_jobs.__version__
    assert kumofire_coordinator.__version__ == version
    assert metadata.version("kumofire-jobs") == version
    assert metadata.version("kumofire-coordinator") == version
    # kumofire-jobs pins the coordinator of its own release.
    assert f"kumofire-coordinator=={version}" in (metadata.requires("kumofire-jobs") or [])


def test_the_version_is_written_once() -> None:
    for path in (ROOT / "pyproject.toml", ROOT / "coordinator" / "pyproject.toml"):
        project = pyproject(path)["project"]
        assert isinstance(project, dict)
        assert "version" not in project and project["dynamic"] == ["version"], path


def test_both_distributions_say_what_they_are() -> None:
    for name, package in (
        ("kumofire-jobs", kumofire_jobs),
        ("kumofire-coordinator", kumofire_coordinator),
    ):
        meta = metadata.metadata(name)
        assert meta["Summary"] and meta["License-Expression"] == "MIT"
        classifiers = meta.get_all("Classifier") or []
        assert "Typing :: Typed" in classifiers
        assert "Programming Language :: Python :: 3.13" in classifiers
        assert meta.get_all("Project-URL")
        assert meta["Description-Content-Type"] == "text/markdown"
        # The typed marker (scripts/test-package finds it in the built wheels too).
        assert (Path(str(package.__file__)).parent / "py.typed").is_file(), name


def test_the_quick_start_installs_the_runtime_the_local_server_and_the_ops_client_only() -> None:
    data = pyproject(ROOT / "pyproject.toml")
    tool = data["tool"]
    assert isinstance(tool, dict)
    assert tool["uv"]["default-groups"] == ["local"]
    groups = data["dependency-groups"]
    assert isinstance(groups, dict)
    assert groups["local"] == ["kumofire-jobs[local]"]
    project = data["project"]
    assert isinstance(project, dict)
    # httpx: the ops commands (docs/cli.md) work wherever the README's install paths put dev;
    # python-dotenv: dev reads `.dev.vars` as wrangler does
    extras = project["optional-dependencies"]
    assert [r.split(">")[0] for r in extras["local"]] == ["uvicorn", "httpx", "python-dotenv"]
    assert [r.split(">")[0] for r in extras["http"]] == ["httpx"]


def test_pinned_tools_agree_with_the_repository() -> None:
    package = json.loads((ROOT / "package.json").read_text(encoding="utf-8"))
    assert package["devDependencies"]["wrangler"] == PINNED_WRANGLER
    wrangler = pyproject(ROOT / "wrangler.toml")
    assert wrangler["compatibility_date"] == COMPATIBILITY_DATE.isoformat()
    low, high = PYTHON_313_DATES
    assert low <= COMPATIBILITY_DATE <= high
