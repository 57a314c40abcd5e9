"""`kumofire-jobs cloudflare check`: what to run before `pywrangler deploy`.

1. The wrangler config holds what the runtime needs (`config.validate_config`).
2. A temporary copy of the project (the config and the directory of `main`; the user's tree is
   never written to) gets a `python_modules/` with the Worker's pure-Python dependencies
   (`vendor`), as `pywrangler sync` would make it minus what pywrangler takes from Pyodide's
   index at deploy.
3. `wrangler deploy --dry-run --outdir` on the copy writes out exactly what it would upload.
4. The import graph of the entry, over those files (`imports`), proves every module it loads
   is uploaded, standard, or provided at deploy, and that none is forbidden.
5. The dashboard's files (`kumofire_jobs/web/ui/`, not Python) are uploaded beside its code.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TextIO

from .config import Problem, Severity, WranglerConfig, load_config, validate_config
from .imports import ImportGraph, ModuleKind, build_import_graph
from .vendor import (
    PYWRANGLER_VENDORED,
    VendorPlan,
    plan_from_metadata,
    plan_from_uv_export,
    pywrangler_module_names,
    vendor,
    verify_vendored,
)
from .wrangler import DeployError, Wrangler, find_wrangler, wrangler_env

__all__ = ["CheckOptions", "Upload", "copy_project", "read_upload", "run_check"]

_Say = Callable[[str], None]

# What is never copied from a module root that is the project's own directory.
_NOT_PROJECT_CODE = (
    ".git",
    ".venv",
    ".venv-workers",
    "node_modules",
    ".wrangler",
    "python_modules",
)


@dataclass(frozen=True)
class CheckOptions:
    config: Path
    offline: bool = False  # never download: vendor from the uv cache only


@dataclass(frozen=True)
class Upload:
    """What `wrangler deploy --dry-run --outdir` wrote: the files it would upload."""

    root: Path
    files: tuple[Path, ...]
    size: int  # bytes, all files
    wrangler_total: str | None  # its own "Total Upload: ... KiB / gzip: ... KiB"

    @property
    def vendor_root(self) -> Path | None:
        path = self.root / "python_modules"
        return path if path.is_dir() else None


def copy_project(config: WranglerConfig, destination: Path) -> Path:
    """Copy what wrangler reads to deploy (the config file and the directory of `main`,
    symlinks kept as links, as wrangler does not follow them) under `destination`; returns
    the copied config's path."""
    main = config.data.get("main")
    if not isinstance(main, str):
        raise DeployError(f"{config.path}: main is not set")
    module_root = (config.directory / main).resolve().parent
    base = Path(os.path.commonpath([config.directory, module_root]))
    copied_config = destination / config.path.relative_to(base)
    copied_config.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(config.path, copied_config)
    skip_top = _NOT_PROJECT_CODE if module_root == config.directory else ()

    def ignore(directory: str, names: list[str]) -> set[str]:
        ignored = {n for n in names if n == "__pycache__" or n.endswith(".pyc")}
        if Path(directory) == module_root:
            ignored |= {n for n in names if n in skip_top}
        return ignored

    shutil.copytree(
        module_root,
        destination / module_root.relative_to(base),
        symlinks=True,
        ignore=ignore,
        dirs_exist_ok=True,
    )
    return copied_config


_TOTAL_UPLOAD = re.compile(r"Total Upload:\s*([^\n]+)")


def read_upload(outdir: Path, wrangler_output: str = "") -> Upload:
    files = tuple(sorted(p for p in outdir.rglob("*") if p.is_file() and p != outdir / "README.md"))
    size = sum(p.stat().st_size for p in files)
    total = _TOTAL_UPLOAD.search(wrangler_output)
    return Upload(outdir, files, size, total.group(1).strip() if total else None)


def _plan(config: WranglerConfig) -> VendorPlan:
    project = config.directory
    if (project / "pyproject.toml").is_file() and (project / "uv.lock").is_file():
        return plan_from_uv_export(project)
    main = str(config.data.get("main", ""))
    uploaded = (config.directory / main).parent / "kumofire_jobs"
    return plan_from_metadata("kumofire-jobs", include_root=not uploaded.is_dir())


def run_check(
    options: CheckOptions, *, out: TextIO | None = None, wrangler: Wrangler | None = None
) -> int:
    """Run the check, printing what it finds; the exit code (0: all is well)."""
    out = out if out is not None else sys.stdout

    def say(text: str) -> None:
        print(text, file=out)

    config = load_config(options.config)
    say(f"Checking {config.path}")
    problems = validate_config(config)
    errors = [p for p in problems if p.severity is Severity.ERROR]
    say("config:")
    _say_problems(say, problems)
    if not errors:
        say("  ok: entry, Python 3.13, D1 and migrations, queue and consumer, coordinator, cron")
    if any(p.code == "main" for p in errors):
        say("bundle: not checked (main must be fixed first)")
        return _verdict(say, errors, None, None)

    runner = wrangler if wrangler is not None else find_wrangler(config.directory)
    with tempfile.TemporaryDirectory(prefix="kumofire-check-") as temporary:
        tmp = Path(temporary)
        copied = copy_project(config, tmp / "project")
        plan = _plan(config)
        target = copied.parent / "python_modules"
        vendored = vendor(plan, target, cwd=config.directory, allow_download=not options.offline)
        how = "downloaded from the package index" if vendored.downloaded else "offline, uv cache"
        say(f"vendored into python_modules/ ({plan.source}; {how}):")
        say("  " + (", ".join(f"{n} {v}" for n, v in vendored.installed) or "nothing"))
        pywrangler = list(plan.pywrangler)
        named = {line.split("=")[0].split(";")[0].strip() for line in pywrangler}
        pywrangler += [p for p in PYWRANGLER_VENDORED if p not in named]
        say(f"  left to `pywrangler sync` (Pyodide's index, at deploy): {', '.join(pywrangler)}")
        if plan.local_only:
            say(f"  left out (the local server only): {', '.join(plan.local_only)}")
        for problem in verify_vendored(target):
            errors.append(Problem("vendor", problem))
            say(f"  {errors[-1]}")

        outdir = tmp / "upload"
        dry = runner.run(
            ["deploy", "--dry-run", "--outdir", str(outdir), "--config", str(copied)],
            cwd=copied.parent,
            env=wrangler_env(state_dir=tmp / "wrangler-state"),
        )
        if not dry.ok:
            errors.append(
                Problem(
                    "wrangler-dry-run",
                    f"`wrangler deploy --dry-run` failed (exit {dry.returncode}):\n"
                    + dry.output.rstrip(),
                )
            )
            say(f"upload: {errors[-1]}")
            return _verdict(say, errors, None, None)
        upload = read_upload(outdir, dry.output)
        wrangler_says = f"; wrangler: {upload.wrangler_total}" if upload.wrangler_total else ""
        say(
            f"upload (wrangler deploy --dry-run): {len(upload.files)} files, "
            f"{upload.size} bytes{wrangler_says}"
        )
        entry = outdir / Path(str(config.data["main"])).name
        if not entry.is_file():
            errors.append(Problem("upload", f"the entry {entry.name} is not in the upload"))
            return _verdict(say, errors, None, upload)
        graph = build_import_graph(
            entry,
            outdir,
            upload.vendor_root,
            pywrangler_modules=pywrangler_module_names(),
        )
        _say_graph(say, graph, upload)
        found = [Problem("missing-module", f.describe()) for f in graph.missing]
        found += [Problem("forbidden-import", f.describe()) for f in graph.forbidden]
        found += dashboard_problems(upload)
        _say_problems(say, found)
        errors += found
        return _verdict(say, errors, graph, upload)


DASHBOARD_RULE = (
    '[[rules]] type = "Text", globs = ["kumofire_jobs/web/ui/*.js", '
    '"kumofire_jobs/web/ui/*.css"], fallthrough = true'
)


def dashboard_problems(upload: Upload) -> list[Problem]:
    """The dashboard's files missing beside an uploaded `kumofire_jobs` (wrangler uploads only
    `.py` and `.html` files of the module root unless its `[[rules]]` add them; a vendored
    package is uploaded whole)."""
    shipped = resources.files("kumofire_jobs").joinpath("web", "ui")
    names = sorted(entry.name for entry in shipped.iterdir() if entry.is_file())
    problems = []
    for base in (upload.root, upload.root / "python_modules"):
        ui = base / "kumofire_jobs" / "web" / "ui"
        if not (base / "kumofire_jobs" / "web" / "dashboard.py").is_file():
            continue
        missing = [name for name in names if not (ui / name).is_file()]
        if missing:
            where = ui.relative_to(upload.root)
            problems.append(
                Problem(
                    "dashboard-files",
                    f"{where}/: {', '.join(missing)} not uploaded: /ui/ would answer 404 for "
                    f"them; add to the wrangler config: {DASHBOARD_RULE}",
                )
            )
    return problems


def _say_problems(say: _Say, problems: Iterable[Problem]) -> None:
    for problem in problems:
        say(f"  {problem}")


def _say_graph(say: _Say, graph: ImportGraph, upload: Upload) -> None:
    parts = [
        (ModuleKind.UPLOAD, "uploaded from the directory of main"),
        (ModuleKind.VENDORED, "vendored"),
        (ModuleKind.STDLIB, "standard library"),
        (ModuleKind.PYWRANGLER, "from pywrangler's packages"),
        (ModuleKind.PLATFORM, "from the Pyodide runtime"),
    ]
    counts = ", ".join(f"{graph.count(kind)} {label}" for kind, label in parts)
    say(
        f"import graph of {graph.entry}.py: {len(graph.modules)} modules "
        f"({len(graph.required)} load with the entry): {counts}"
    )
    if graph.optional_missing:
        tops = sorted({f.module.split(".")[0] for f in graph.optional_missing})
        say(
            "  optional, absent (behind `except ImportError`, or imported inside functions of "
            f"vendored packages): {', '.join(tops)}"
        )
    unused = sorted(
        ".".join(p.relative_to(upload.root).with_suffix("").parts).removesuffix(".__init__")
        for p in upload.files
        if p.suffix == ".py" and not p.is_relative_to(upload.root / "python_modules")
    )
    unused = [m for m in unused if m not in graph.modules]
    if unused:
        packages = sorted({".".join(m.split(".")[:2]) for m in unused})
        say(
            f"  uploaded but never imported by the entry: {len(unused)} modules "
            f"({', '.join(packages)})"
        )


def _verdict(
    say: _Say, errors: list[Problem], graph: ImportGraph | None, upload: Upload | None
) -> int:
    if errors:
        say(f"FAILED: {len(errors)} problem(s)")
        return 1
    assert graph is not None and upload is not None
    say(
        f"ok: the Worker bundle is complete: {len(graph.modules)} modules reachable, "
        f"{upload.size} bytes to upload"
    )
    return 0
