"""`kumofire-jobs init DIR`: a new project in the shape `wrangler init` gives a Python Worker.

It writes the files of `template/` (each `NAME.tmpl` as `NAME`, its `{{placeholders}}` filled)
and copies the Kumofire Jobs migrations, so the project runs at once with `kumofire-jobs dev`
(`[tool.kumofire-jobs] app` in its pyproject.toml names the runtime), tests with pytest and
the testing kit, and passes `kumofire-jobs cloudflare check`.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from importlib import metadata, resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TextIO
from urllib.parse import unquote, urlparse

from ..core.migrations import default_migrations_dir
from .config import COMPATIBILITY_DATE, PINNED_WRANGLER
from .wrangler import DeployError

__all__ = ["InitOptions", "init_project", "project_name", "run_init"]

_TEMPLATE = "template"
_SUFFIX = ".tmpl"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_PACKAGES = ("kumofire-jobs", "kumofire-coordinator")


@dataclass(frozen=True)
class InitOptions:
    directory: Path
    name: str | None = None  # the Worker's and the project's name (default: from the directory)


def project_name(text: str) -> str:
    """A name wrangler accepts for a Worker (and pip for a project): lower-case letters, digits
    and dashes, at most 63 characters, starting with a letter."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].rstrip("-")
    if not name or not name[0].isalpha():
        raise DeployError(
            f"cannot make a Worker name from {text!r}: pass --name with a letter first "
            "(lower-case letters, digits and dashes)"
        )
    return name


def _installed_sources() -> str:
    """`[tool.uv.sources]` for the Kumofire Jobs packages when they were installed from files
    (built wheels, or this repository) rather than a package index: `pywrangler` vendors the
    Worker's dependencies with uv, which then takes them from the same files."""
    lines = []
    for package in _PACKAGES:
        try:
            direct = metadata.distribution(package).read_text("direct_url.json")
        except metadata.PackageNotFoundError:
            continue
        if not direct:
            continue  # from an index
        url = str(json.loads(direct).get("url", ""))
        if not url.startswith("file:"):
            continue
        path = json.dumps(unquote(urlparse(url).path))
        # Non-editable: an editable install would vendor a .pth file pointing at this machine.
        extra = ", editable = false" if not path.endswith('.whl"') else ""
        lines.append(f"{package} = {{ path = {path}{extra} }}")
    if not lines:
        return ""
    return (
        "\n[tool.uv.sources]\n"
        "# Where kumofire-jobs was installed from when this project was made (not a package\n"
        "# index): `pywrangler deploy` vendors it from there. Remove these lines once it comes\n"
        "# from your package index.\n" + "\n".join(lines) + "\n"
    )


def _template_files() -> list[tuple[str, Traversable]]:
    """(relative path without .tmpl, file) for each template file."""
    found: list[tuple[str, Traversable]] = []

    def walk(node: Traversable, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(_SUFFIX):
                found.append((prefix + child.name.removesuffix(_SUFFIX), child))

    walk(resources.files(__package__ or "kumofire_jobs.deploy").joinpath(_TEMPLATE), "")
    return found


def _fill(text: str, values: dict[str, str], where: str) -> str:
    def one(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise DeployError(f"template {where}: unknown placeholder {{{{{key}}}}}")
        return values[key]

    return _PLACEHOLDER.sub(one, text)


def init_project(options: InitOptions) -> list[Path]:
    """Write the project; returns the files written, relative to its directory."""
    directory = options.directory
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise DeployError(f"{directory} exists and is not an empty directory")
    name = project_name(options.name or directory.resolve().name)
    from .. import __version__

    values = {
        "name": name,
        "version": __version__,
        "compatibility_date": COMPATIBILITY_DATE.isoformat(),
        "wrangler": PINNED_WRANGLER,
        "sources": _installed_sources(),
    }
    written: list[Path] = []
    directory.mkdir(parents=True, exist_ok=True)
    for relative, source in _template_files():
        # A dotfile is kept without its dot in the package (gitignore.tmpl): hatch and pip
        # treat dotfiles inside a package like any other, but editors and tools may hide them.
        target = Path("." + relative if relative == "gitignore" else relative)
        (directory / target).parent.mkdir(parents=True, exist_ok=True)
        text = _fill(source.read_text(encoding="utf-8"), values, relative)
        (directory / target).write_text(text, encoding="utf-8")
        written.append(target)
    (directory / "migrations").mkdir()
    for migration in sorted(default_migrations_dir().glob("*.sql")):
        shutil.copyfile(migration, directory / "migrations" / migration.name)
        written.append(Path("migrations") / migration.name)
    return written


def run_init(options: InitOptions, *, out: TextIO | None = None) -> int:
    out = out if out is not None else sys.stdout
    written = init_project(options)
    where = options.directory
    print(f"Created a Kumofire Jobs project in {where}/:", file=out)
    for path in written:
        print(f"  {path.as_posix()}", file=out)
    print(
        "\nNext:\n"
        f"  cd {shlex.quote(str(where))}\n"
        "  kumofire-jobs dev          # your jobs on your machine, http://127.0.0.1:8787\n"
        "  python -m pytest           # its tests (pip install pytest pytest-asyncio)\n"
        "  README.md says how to deploy it to Cloudflare.",
        file=out,
    )
    return 0
