"""The Worker's pure-Python dependencies, vendored into a `python_modules/` as `pywrangler sync`
would, minus what it takes from Pyodide's package index at deploy and what only the local
server needs.

The requirements come from the project's lock (`uv export --frozen`, when the project has a
`uv.lock`), else from the installed `kumofire-jobs` distribution's metadata, pinned to the
versions installed here. They are installed with `uv pip install --target --no-deps` for
Python 3.13, from the uv cache first (offline), and from the package index only when the
cache lacks something. Workspace and path packages (`kumofire-coordinator`) are built and
installed non-editable: an editable install would vendor only a `.pth` file pointing at
this machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from .wrangler import DeployError

__all__ = [
    "LOCAL_ONLY",
    "PYWRANGLER_VENDORED",
    "VendorPlan",
    "VendorResult",
    "find_uv",
    "normalize",
    "plan_from_metadata",
    "plan_from_uv_export",
    "pywrangler_module_names",
    "vendor",
    "verify_vendored",
]

PYWRANGLER_VENDORED: tuple[str, ...] = ("msgspec", "workers-runtime-sdk")
"""Vendored by `pywrangler sync` from Pyodide's package index at deploy (msgspec has native
code; the Workers SDK is added by pywrangler itself)."""

LOCAL_ONLY: tuple[str, ...] = ("uvicorn", "httpx", "python-dotenv")
"""The `local` extra (the local server; httpx for the ops commands, which also make up the
`http` extra): never in the Worker, with what only they need."""

# Import names of the pywrangler-vendored packages, when they are not installed here to ask.
_KNOWN_MODULES = {
    "msgspec": ("msgspec",),
    "workers-runtime-sdk": (
        "workers",
        "asgi",
        "_workers_sdk_entropy_import_context",
        "_workers_sdk_package_patches",
        "_workers_sdk_patch_loader",
    ),
}

TARGET_PYTHON = "3.13"


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pywrangler_module_names(packages: Iterable[str] = PYWRANGLER_VENDORED) -> set[str]:
    """The top-level modules the pywrangler-vendored packages provide."""
    names: set[str] = set()
    for package in packages:
        names.update(_KNOWN_MODULES.get(normalize(package), ()))
        try:
            files = metadata.distribution(package).files or []
        except metadata.PackageNotFoundError:
            continue
        for file in files:
            top = file.parts[0]
            if len(file.parts) == 1 and file.suffix == ".py":
                names.add(file.stem)
            elif len(file.parts) > 1 and top.isidentifier() and top != "__pycache__":
                names.add(top)
    return names


@dataclass(frozen=True)
class VendorPlan:
    """What to vendor, and what is left to pywrangler or left out."""

    source: str  # where the requirements came from
    requirements: tuple[str, ...]  # requirement lines for `uv pip install --no-deps`
    pywrangler: tuple[str, ...] = ()  # left to `pywrangler sync` (Pyodide's index)
    local_only: tuple[str, ...] = ()  # left out: only the local server needs them


@dataclass
class VendorResult:
    target: Path
    installed: list[tuple[str, str]] = field(default_factory=list)  # (name, version)
    downloaded: bool = False  # the uv cache lacked something; the index was used


# --- uv ----------------------------------------------------------------------------------------


def find_uv() -> list[str]:
    """The uv to run: the one running us (`uv run` sets UV), on PATH, or the `uv` module."""
    from_env = os.environ.get("UV")
    if from_env and Path(from_env).is_file():
        return [from_env]
    on_path = shutil.which("uv")
    if on_path is not None:
        return [on_path]
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    raise DeployError(
        "uv is needed to vendor the Worker's packages (as pywrangler does): "
        "install it with `pip install uv` (https://docs.astral.sh/uv/)"
    )


def _run(
    command: Sequence[str], cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PYTHON")}
    env["NO_COLOR"] = "1"
    try:
        return subprocess.run(
            list(command),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise DeployError(f"`{' '.join(command)}` did not finish in {timeout:.0f} s") from error


# --- the plan ----------------------------------------------------------------------------------

_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


def _requirement_name(line: str) -> str | None:
    if line.startswith((".", "/", "file:")) or "://" in line.split(";")[0].split("@")[0]:
        return None
    match = _NAME.match(line)
    return normalize(match.group(1)) if match else None


def _absolute(line: str, root: Path) -> str:
    """A path requirement (`./coordinator`) made absolute, so it installs from anywhere."""
    requirement, sep, marker = line.partition(";")
    requirement = requirement.strip()
    if requirement.startswith((".", "/")) or re.match(r"^[A-Za-z]:[\\/]", requirement):
        requirement = str((root / requirement).resolve())
    return f"{requirement} ;{marker}" if sep else requirement


def plan_from_uv_export(project: Path) -> VendorPlan:
    """The project's locked runtime dependencies (no dev group, no extras, not the project
    itself: its code is uploaded from the directory of `main`)."""
    uv = find_uv()
    base = [
        *uv, "export", "--frozen", "--no-default-groups", "--no-emit-project", "--no-editable",
        "--no-hashes", "--no-annotate", "--no-header", "--format", "requirements-txt",
    ]  # fmt: skip
    prune = [arg for name in (*PYWRANGLER_VENDORED, *LOCAL_ONLY) for arg in ("--prune", name)]
    full = _run(base, project)
    pruned = _run([*base, *prune], project)
    for done in (full, pruned):
        if done.returncode != 0:
            raise DeployError(f"`uv export` failed in {project}:\n{done.stderr.strip()}")
    kept = _lines(pruned.stdout)
    left = [line for line in _lines(full.stdout) if line not in kept]
    pywrangler = tuple(
        line
        for line in left
        if _requirement_name(line) in {normalize(p) for p in PYWRANGLER_VENDORED}
    )
    local_only = tuple(line for line in left if line not in pywrangler)
    return VendorPlan(
        source=f"uv export --frozen ({project / 'uv.lock'})",
        requirements=tuple(_absolute(line, project) for line in kept),
        pywrangler=pywrangler,
        local_only=local_only,
    )


def _lines(text: str) -> list[str]:
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "-"))
    ]


_EXTRA = re.compile(r"""\bextra\s*==\s*(['"])([^'"]+)\1""")


def plan_from_metadata(
    root: str = "kumofire-jobs", *, include_root: bool = False, extras: Iterable[str] = ()
) -> VendorPlan:
    """The runtime dependencies of the installed distribution `root`, transitively, pinned to
    the versions installed in this environment. Each keeps the environment markers of the
    paths that lead to it, for uv to decide for Python 3.13. A conditional dependency not
    installed here (`exceptiongroup; python_version < "3.11"`) is passed on unpinned."""
    pywrangler_names = {normalize(n) for n in PYWRANGLER_VENDORED}
    skip = pywrangler_names | {normalize(n) for n in LOCAL_ONLY}
    clauses: dict[str, set[str]] = {}
    found: dict[str, metadata.Distribution] = {}
    absent: dict[str, set[str]] = {}  # requirement text -> clauses
    left: dict[str, set[str]] = {"pywrangler": set(), "local": set()}
    walked: set[tuple[str, frozenset[str], str]] = set()
    queue: list[tuple[str, frozenset[str], str, str]] = [(root, frozenset(extras), "", root)]
    while queue:
        name, wanted, clause, spec = queue.pop()
        key = normalize(name)
        if (key, wanted, clause) in walked or (clause and (key, wanted, "") in walked):
            continue  # already walked, or already unconditionally
        walked.add((key, wanted, clause))
        try:
            dist = found.get(key) or metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if key == normalize(root):
                raise DeployError(f"{root} is not installed in this environment") from None
            if not clause:
                raise DeployError(
                    f"{name} is needed by the Worker but not installed in this environment "
                    "(run `uv sync`, or lock the project with uv)"
                ) from None
            absent.setdefault(spec.strip(), set()).add(clause)
            continue
        found[key] = dist
        clauses.setdefault(key, set()).add(clause)
        for requirement in dist.requires or []:
            dep_spec, _, marker = requirement.partition(";")
            dep = _requirement_name(dep_spec)
            if dep is None:
                continue
            marker = _decide_extras(marker.strip(), wanted)
            if marker == "python_version < '0'":
                continue  # only for an extra nobody asked for
            if dep in skip:
                version = _installed_version(dep)
                line = f"{dep}=={version}" if version else dep_spec.strip()
                left["pywrangler" if dep in pywrangler_names else "local"].add(line)
                continue
            dep_extras = re.search(r"\[([^\]]*)\]", dep_spec)
            names = frozenset(
                e.strip() for e in (dep_extras.group(1).split(",") if dep_extras else ())
            )
            joined = " and ".join(f"({c})" for c in (clause, marker) if c)
            queue.append((dep, names, joined, dep_spec))
    requirements = []
    for key, dist in sorted(found.items()):
        if key != normalize(root) or include_root:
            requirements.append(_with_marker(_pin(dist), clauses[key]))
    for spec, marks in sorted(absent.items()):
        requirements.append(_with_marker(spec, marks))
    return VendorPlan(
        source=f"the installed {root} distribution's metadata",
        requirements=tuple(requirements),
        pywrangler=tuple(sorted(left["pywrangler"])),
        local_only=tuple(sorted(left["local"])),
    )


def _with_marker(requirement: str, clauses: set[str]) -> str:
    if "" in clauses:
        return requirement
    return f"{requirement} ; " + " or ".join(f"({c})" for c in sorted(clauses))


def _decide_extras(marker: str, wanted: frozenset[str]) -> str:
    """`extra == "x"` made true or false (extras are asked of a package, not of uv)."""

    def decide(match: re.Match[str]) -> str:
        return "python_version >= '0'" if match.group(2) in wanted else "python_version < '0'"

    return _EXTRA.sub(decide, marker)


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _pin(dist: metadata.Distribution) -> str:
    """How to install exactly this distribution again, never editable."""
    name = dist.metadata["Name"]
    direct = dist.read_text("direct_url.json")
    if direct:
        info = json.loads(direct)
        url = str(info.get("url", ""))
        if "dir_info" in info and url.startswith("file:"):
            return str(Path(unquote(urlparse(url).path)))
        if "archive_info" in info or "vcs_info" in info:
            return f"{name} @ {url}"
    return f"{name}=={dist.version}"


# --- installing --------------------------------------------------------------------------------


def vendor(
    plan: VendorPlan, target: Path, *, cwd: Path, allow_download: bool = True
) -> VendorResult:
    """Install `plan` into `target` (created, or emptied first)."""
    result = VendorResult(target)
    shutil.rmtree(target, ignore_errors=True)
    if not plan.requirements:
        target.mkdir(parents=True)
        return result
    uv = find_uv()
    with tempfile.TemporaryDirectory(prefix="kumofire-vendor-") as temporary:
        requirements = Path(temporary) / "requirements.txt"
        requirements.write_text("\n".join(plan.requirements) + "\n", encoding="utf-8")
        command = [
            *uv, "pip", "install", "--target", str(target), "--no-deps",
            "--python-version", TARGET_PYTHON, "--python", sys.executable,
            "--link-mode", "copy", "-r", str(requirements),
        ]  # fmt: skip
        done = _run([*command, "--offline"], cwd)
        if done.returncode != 0:
            if not allow_download:
                raise DeployError(
                    "vendoring offline failed (the uv cache lacks a package; run without "
                    f"--offline to download it):\n{done.stderr.strip()}"
                )
            shutil.rmtree(target, ignore_errors=True)
            done = _run(command, cwd)
            result.downloaded = True
            if done.returncode != 0:
                raise DeployError(f"vendoring the Worker's packages failed:\n{done.stderr.strip()}")
    # What uv adds for a --target install that pywrangler's copy of site-packages lacks.
    shutil.rmtree(target / "bin", ignore_errors=True)
    (target / ".lock").unlink(missing_ok=True)
    for cache in target.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    result.installed = _installed(target)
    return result


def _installed(target: Path) -> list[tuple[str, str]]:
    found = []
    for info in sorted(target.glob("*.dist-info")):
        meta = info / "METADATA"
        if meta.is_file():
            headers = HeaderParser().parsestr(meta.read_text(encoding="utf-8", errors="replace"))
            found.append((str(headers["Name"]), str(headers["Version"])))
    return found


_NATIVE = (".so", ".pyd", ".dylib", ".dll")


def verify_vendored(
    target: Path, *, expect: Sequence[str] = ("kumofire_coordinator",)
) -> list[str]:
    """What is wrong with a vendored directory: path files (an editable install vendors only
    a `.pth` pointing at this machine), native code (only Pyodide builds run on Workers), and
    for each package of `expect` that is installed, whether its code is really there."""
    problems = []
    for pth in sorted(target.glob("*.pth")):
        problems.append(
            f"python_modules/{pth.name}: a path file (an editable install?): the Worker would "
            "get a pointer to this machine, not the code; install the package non-editable"
        )
    for path in sorted(target.rglob("*")):
        if path.suffix in _NATIVE or ".cpython-" in path.name:
            relative = path.relative_to(target).as_posix()
            problems.append(
                f"python_modules/{relative}: native code, which does not run on Workers "
                "(only Pyodide builds do, which pywrangler vendors from Pyodide's index)"
            )
    installed = {normalize(name) for name, _ in _installed(target)}
    for package in expect:
        if normalize(package) not in installed:
            continue
        modules = list((target / package).glob("*.py"))
        if not (target / package / "__init__.py").is_file() or not modules:
            problems.append(
                f"python_modules/{package}/: the package's modules are missing (an editable "
                "install?): install it non-editable"
            )
    return problems
