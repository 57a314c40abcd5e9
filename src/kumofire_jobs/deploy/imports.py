"""The static import graph of a Python Worker, over the files it would upload.

From the entry module, every import is followed: module-level and function-level ones,
`importlib.import_module("literal")` calls, relative imports resolved against their
package, and the parent packages every dotted import runs. Imports under `if TYPE_CHECKING:`
never run and are left out; branches on `sys.version_info`, `sys.platform` and `os.name` are
decided for the Worker's interpreter (Python 3.13 on Pyodide: `emscripten`, `posix`); any other
condition keeps both branches.

Each imported module is then one of: a file among the upload's roots (the directory of `main`,
then `python_modules/`), the standard library, a package `pywrangler sync` vendors at deploy,
a module the Pyodide runtime provides, or missing. Imports inside a `try` that catches
`ImportError` are optional: a missing one is reported, not an error. Forbidden modules (the
local bindings, `sqlite3`) are errors wherever they are reached, with the chain of imports
that reaches them.
"""

from __future__ import annotations

import ast
import operator
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = [
    "ADDED_STDLIB_MODULES",
    "FORBIDDEN_MODULES",
    "PLATFORM_MODULES",
    "REMOVED_STDLIB_MODULES",
    "Finding",
    "ImportGraph",
    "ImportRef",
    "ModuleKind",
    "Resolved",
    "build_import_graph",
    "collect_imports",
    "stdlib_modules",
]

FORBIDDEN_MODULES: tuple[str, ...] = ("sqlite3", "_sqlite3", "kumofire_jobs.local")
"""Never on the Worker's import path (DESIGN.md, "Dependency rules")."""

PLATFORM_MODULES: frozenset[str] = frozenset(
    {
        # Pyodide's own modules, present in every Python Worker.
        "js",
        "pyodide",
        "pyodide_js",
        "_pyodide",
        "_pyodide_core",
        # The Workers runtime's (typed by stubs in workers-runtime-sdk).
        "_cloudflare_compat_flags",
        "_pyodide_entrypoint_helper",
    }
)
"""Top-level modules the Python Workers runtime provides without any vendoring."""

# sys.stdlib_module_names of Python 3.13 against 3.11's (this project's oldest host Python).
ADDED_STDLIB_MODULES: frozenset[str] = frozenset(
    {
        "_android_support", "_colorize", "_interpchannels", "_interpqueues", "_interpreters",
        "_ios_support", "_opcode_metadata", "_pydatetime", "_pylong", "_pyrepl", "_sha2",
        "_suggestions", "_sysconfig", "_wmi",
    }
)  # fmt: skip
"""Standard modules Python 3.13 has that a 3.11 host does not know."""

REMOVED_STDLIB_MODULES: frozenset[str] = frozenset(
    {
        # Removed in 3.12 and 3.13 (PEP 594, distutils, imp, lib2to3, ...).
        "_bootsubprocess", "_crypt", "_msi", "_sha256", "_sha512", "aifc", "asynchat",
        "asyncore", "audioop", "cgi", "cgitb", "chunk", "crypt", "distutils", "imghdr", "imp",
        "lib2to3", "mailcap", "msilib", "nis", "nntplib", "ossaudiodev", "pipes", "smtpd",
        "sndhdr", "spwd", "sunau", "telnetlib", "uu", "xdrlib",
    }
)  # fmt: skip
"""Standard modules a 3.11 host has that Python 3.13 no longer ships."""


def stdlib_modules() -> frozenset[str]:
    """The top-level standard modules of the Worker's Python 3.13, as far as the host knows."""
    return (frozenset(sys.stdlib_module_names) | ADDED_STDLIB_MODULES) - REMOVED_STDLIB_MODULES


class ModuleKind(StrEnum):
    UPLOAD = "upload"  # a file under the directory of `main`
    VENDORED = "vendored"  # a file under python_modules/
    STDLIB = "stdlib"
    PYWRANGLER = "pywrangler"  # vendored by `pywrangler sync` at deploy
    PLATFORM = "platform"  # provided by the Pyodide runtime


@dataclass(frozen=True)
class ImportRef:
    """One import statement (or `importlib.import_module` call) of a module."""

    module: str  # the absolute module imported (`from X import ...`: X)
    line: int
    names: tuple[str, ...] = ()  # `from X import a, b`: a, b (each maybe a submodule)
    optional: bool = False  # inside a try that catches ImportError
    lazy: bool = False  # inside a function: runs when called, not on import
    error: str | None = None  # the import cannot be resolved as written (a bad relative one)


@dataclass(frozen=True)
class Resolved:
    name: str
    kind: ModuleKind
    path: Path | None = None  # for UPLOAD and VENDORED modules
    is_package: bool = False


@dataclass(frozen=True)
class Finding:
    """A module the graph reaches that is missing or forbidden, and how it is reached."""

    module: str
    chain: tuple[str, ...]  # entry, ..., the importing module, `module`
    location: str  # "relative/path.py:LINE" of the import
    detail: str = ""

    def describe(self) -> str:
        text = f"{self.module} (imported at {self.location}; chain: {' -> '.join(self.chain)})"
        return f"{text}: {self.detail}" if self.detail else text


@dataclass
class ImportGraph:
    entry: str
    modules: dict[str, Resolved] = field(default_factory=dict)
    missing: list[Finding] = field(default_factory=list)
    optional_missing: list[Finding] = field(default_factory=list)
    forbidden: list[Finding] = field(default_factory=list)
    required: set[str] = field(default_factory=set)  # loaded whenever the entry is

    @property
    def ok(self) -> bool:
        return not self.missing and not self.forbidden

    def count(self, *kinds: ModuleKind) -> int:
        return sum(1 for m in self.modules.values() if m.kind in kinds)


# --- collecting a module's imports -------------------------------------------------------------

_IMPORT_ERRORS = frozenset({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})


def collect_imports(
    source: str,
    module: str,
    *,
    is_package: bool = False,
    filename: str = "<module>",
    python: tuple[int, int] = (3, 13),
) -> list[ImportRef]:
    """Every import `module` (named as it would be imported) makes, in source order."""
    tree = ast.parse(source, filename=filename)
    package = module if is_package else module.rpartition(".")[0]
    collector = _Collector(package, python)
    collector.visit_block(tree.body, _Context())
    return collector.refs


@dataclass(frozen=True)
class _Context:
    optional: bool = False  # inside a try that catches ImportError
    lazy: bool = False  # inside a function body


class _Collector:
    def __init__(self, package: str, python: tuple[int, int]) -> None:
        self.package = package
        self.python = python
        self.refs: list[ImportRef] = []

    def visit_block(self, nodes: Iterable[ast.AST], context: _Context) -> None:
        for node in nodes:
            self.visit(node, context)

    def visit(self, node: ast.AST, context: _Context) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                self._add(alias.name, node.lineno, (), context)
        elif isinstance(node, ast.ImportFrom):
            self._import_from(node, context)
        elif isinstance(node, ast.If):
            decided = _decide(node.test, self.python)
            self.visit(node.test, context)
            if decided is not False:
                self.visit_block(node.body, context)
            if decided is not True:
                self.visit_block(node.orelse, context)
        elif isinstance(node, ast.Try | ast.TryStar):
            guarded = context.optional or any(_catches_import_error(h) for h in node.handlers)
            self.visit_block(node.body, replace(context, optional=guarded))
            self.visit_block(node.handlers, context)
            self.visit_block(node.orelse, context)
            self.visit_block(node.finalbody, context)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            # The decorators and defaults run on definition, the body when called.
            self.visit_block(node.decorator_list, context)
            self.visit(node.args, context)
            self.visit_block(node.body, replace(context, lazy=True))
        elif isinstance(node, ast.Lambda):
            self.visit(node.args, context)
            self.visit(node.body, replace(context, lazy=True))
        else:
            if isinstance(node, ast.Call):
                self._dynamic_import(node, context)
            self.visit_block(ast.iter_child_nodes(node), context)

    def _add(
        self,
        module: str,
        line: int,
        names: tuple[str, ...],
        context: _Context,
        error: str | None = None,
    ) -> None:
        self.refs.append(ImportRef(module, line, names, context.optional, context.lazy, error))

    def _import_from(self, node: ast.ImportFrom, context: _Context) -> None:
        names = tuple(alias.name for alias in node.names if alias.name != "*")
        if node.level == 0:
            assert node.module is not None
            self._add(node.module, node.lineno, names, context)
            return
        base = self._relative_base(node.level)
        if base is None:
            written = "." * node.level + (node.module or "")
            error = "relative import beyond the top-level package"
            self._add(written, node.lineno, names, context, error)
            return
        target = ".".join(part for part in (base, node.module) if part)
        self._add(target, node.lineno, names, context)

    def _relative_base(self, level: int) -> str | None:
        parts = self.package.split(".") if self.package else []
        if not parts or level - 1 >= len(parts):
            return None
        return ".".join(parts[: len(parts) - (level - 1)])

    def _dynamic_import(self, node: ast.Call, context: _Context) -> None:
        name = _dotted(node.func)
        if name is None or name.split(".")[-1] not in ("import_module", "__import__"):
            return
        if not node.args:
            return
        first = node.args[0]
        if not isinstance(first, ast.Constant) or not isinstance(first.value, str):
            return
        target = first.value
        if target.startswith("."):
            level = len(target) - len(target.lstrip("."))
            base = self._relative_base(level)
            if base is None:
                return
            target = ".".join(part for part in (base, target[level:]) if part)
        self._add(target, node.lineno, (), context)


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    for kind in types:
        name = (
            kind.id
            if isinstance(kind, ast.Name)
            else kind.attr
            if isinstance(kind, ast.Attribute)
            else None
        )
        if name in _IMPORT_ERRORS:
            return True
    return False


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


_TARGET_PLATFORM = {"sys.platform": "emscripten", "os.name": "posix"}


def _decide(test: ast.expr, python: tuple[int, int]) -> bool | None:
    """The value of an `if` test in the Worker, when it is decidable statically."""
    if isinstance(test, ast.Name | ast.Attribute):
        name = _dotted(test)
        if name is not None and name.split(".")[-1] == "TYPE_CHECKING":
            return False
        return None
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = _decide(test.operand, python)
        return None if inner is None else not inner
    if isinstance(test, ast.BoolOp):
        values = [_decide(v, python) for v in test.values]
        if isinstance(test.op, ast.And):
            if False in values:
                return False
            return True if all(v is True for v in values) else None
        if True in values:
            return True
        return False if all(v is False for v in values) else None
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        return _compare(test.left, test.ops[0], test.comparators[0], python)
    if (
        isinstance(test, ast.Call)
        and isinstance(test.func, ast.Attribute)
        and test.func.attr == "startswith"
        and _dotted(test.func.value) == "sys.platform"
        and len(test.args) == 1
        and isinstance(test.args[0], ast.Constant)
        and isinstance(test.args[0].value, str)
    ):
        return _TARGET_PLATFORM["sys.platform"].startswith(test.args[0].value)
    return None


def _compare(
    left: ast.expr, op: ast.cmpop, right: ast.expr, python: tuple[int, int]
) -> bool | None:
    if _dotted(left) in _TARGET_PLATFORM:
        if not isinstance(right, ast.Constant) or not isinstance(right.value, str):
            return None
        return _apply(op, _TARGET_PLATFORM[_dotted(left) or ""], right.value)
    length: int | None = None  # sys.version_info[:length]
    if isinstance(left, ast.Subscript) and _dotted(left.value) == "sys.version_info":
        index = left.slice
        if not (
            isinstance(index, ast.Slice)
            and index.lower is None
            and index.step is None
            and isinstance(index.upper, ast.Constant)
            and isinstance(index.upper.value, int)
        ):
            return None
        length = index.upper.value
        left = left.value
    if _dotted(left) != "sys.version_info" or not isinstance(right, ast.Tuple):
        return None
    other = tuple(e.value for e in right.elts if isinstance(e, ast.Constant))
    if len(other) != len(right.elts) or not all(type(v) is int for v in other):
        return None
    if length is not None and length <= len(python):
        return _apply(op, python[:length], other)
    # The whole sys.version_info: (3, 13, micro, releaselevel, serial), micro unknown.
    width = min(len(other), len(python))
    if python[:width] != other[:width]:
        return _apply(op, python[:width], other[:width])
    if len(other) <= len(python):
        return _apply(op, 1, 0)  # an equal prefix: the longer tuple is the greater
    return None


_OPERATORS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


def _apply(op: ast.cmpop, a: object, b: object) -> bool | None:
    function = _OPERATORS.get(type(op))
    if function is None:
        return None
    try:
        return bool(function(a, b))
    except TypeError:
        return None


# --- the graph ---------------------------------------------------------------------------------


def _is_under(module: str, prefixes: Iterable[str]) -> str | None:
    for prefix in prefixes:
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return None


@dataclass(frozen=True)
class _Root:
    path: Path
    kind: ModuleKind


class _Finder:
    def __init__(
        self,
        roots: Sequence[_Root],
        stdlib: frozenset[str],
        pywrangler: frozenset[str],
        platform: frozenset[str],
    ) -> None:
        self.roots = roots
        self.stdlib = stdlib
        self.pywrangler = pywrangler
        self.platform = platform

    def find(self, name: str) -> Resolved | None:
        parts = name.split(".")
        top = parts[0]
        # What the runtime or pywrangler provides is theirs, whatever else is on the path.
        if top in self.platform:
            return Resolved(name, ModuleKind.PLATFORM)
        if top in self.pywrangler:
            return Resolved(name, ModuleKind.PYWRANGLER)
        # A regular package or module wins, in sys.path order; else a namespace package.
        for root in self.roots:
            found = self._in(root, parts)
            if found is not None:
                return found
        namespace = [r for r in self.roots if (r.path.joinpath(*parts)).is_dir()]
        if namespace:
            return Resolved(name, namespace[0].kind, namespace[0].path.joinpath(*parts), True)
        if any(self._in(root, [top]) is not None for root in self.roots):
            return None  # the top-level package is uploaded but lacks this submodule
        if top in self.stdlib:
            return Resolved(name, ModuleKind.STDLIB)
        return None

    @staticmethod
    def _in(root: _Root, parts: list[str]) -> Resolved | None:
        base = root.path.joinpath(*parts)
        init = base / "__init__.py"
        if init.is_file():
            return Resolved(".".join(parts), root.kind, init, True)
        module = base.with_name(base.name + ".py")
        if module.is_file():
            return Resolved(".".join(parts), root.kind, module, False)
        return None


@dataclass
class _Walk:
    modules: dict[str, Resolved] = field(default_factory=dict)
    parent: dict[str, str] = field(default_factory=dict)
    missing: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # importer, at, why
    forbidden: dict[str, tuple[str, str]] = field(default_factory=dict)  # importer, at

    def chain(self, importer: str, module: str) -> tuple[str, ...]:
        path = [module, importer]
        while path[-1] in self.parent:
            path.append(self.parent[path[-1]])
        return tuple(reversed(path))


def build_import_graph(
    entry: Path,
    upload_root: Path,
    vendor_root: Path | None = None,
    *,
    pywrangler_modules: Iterable[str] = (),
    platform_modules: Iterable[str] = PLATFORM_MODULES,
    stdlib: Iterable[str] | None = None,
    forbidden: Sequence[str] = FORBIDDEN_MODULES,
    python: tuple[int, int] = (3, 13),
) -> ImportGraph:
    """Follow every import of `entry` (a file directly under `upload_root`), transitively.

    `upload_root` is the Worker's import root (the directory of `main`, or the same part of
    `wrangler deploy --outdir`), `vendor_root` its `python_modules/`.

    Two walks: one over the imports that must succeed for the entry to load (a missing
    module there is an error), one over every import (a module missing only there is
    optional: behind `except ImportError`, or a function-level import inside a vendored
    package, which runs only when that function is called)."""
    roots = [_Root(upload_root, ModuleKind.UPLOAD)]
    if vendor_root is not None:
        roots.append(_Root(vendor_root, ModuleKind.VENDORED))
    finder = _Finder(
        roots,
        frozenset(stdlib) if stdlib is not None else stdlib_modules(),
        frozenset(pywrangler_modules),
        frozenset(platform_modules),
    )
    start = Resolved(entry.stem, ModuleKind.UPLOAD, entry, False)
    parsed: dict[str, list[ImportRef] | Exception] = {}
    required = _walk(start, finder, roots, forbidden, python, parsed, everything=False)
    full = _walk(start, finder, roots, forbidden, python, parsed, everything=True)

    graph = ImportGraph(entry=start.name, modules=full.modules, required=set(required.modules))
    for module, (importer, at, why) in required.missing.items():
        graph.missing.append(Finding(module, required.chain(importer, module), at, why))
    for module, (importer, at, why) in full.missing.items():
        if module not in required.missing:
            graph.optional_missing.append(Finding(module, full.chain(importer, module), at, why))
    for module, (importer, at) in full.forbidden.items():
        walk = required if module in required.forbidden else full
        importer, at = walk.forbidden[module]
        graph.forbidden.append(
            Finding(module, walk.chain(importer, module), at, "must not be reachable from "
                    "the Worker entry")
        )  # fmt: skip
    return graph


def _walk(
    start: Resolved,
    finder: _Finder,
    roots: Sequence[_Root],
    forbidden: Sequence[str],
    python: tuple[int, int],
    parsed: dict[str, list[ImportRef] | Exception],
    *,
    everything: bool,
) -> _Walk:
    walk = _Walk(modules={start.name: start})
    queue: deque[str] = deque([start.name])

    def where(resolved: Resolved, line: int) -> str:
        assert resolved.path is not None
        for root in roots:
            if resolved.path.is_relative_to(root.path):
                prefix = "python_modules/" if root.kind is ModuleKind.VENDORED else ""
                return f"{prefix}{resolved.path.relative_to(root.path).as_posix()}:{line}"
        return f"{resolved.path}:{line}"

    while queue:
        current = walk.modules[queue.popleft()]
        assert current.path is not None
        if current.path.name != "__init__.py" and current.is_package:
            continue  # a namespace package: no code of its own
        if current.name not in parsed:
            try:
                parsed[current.name] = collect_imports(
                    current.path.read_text(encoding="utf-8"),
                    current.name,
                    is_package=current.is_package,
                    filename=str(current.path),
                    python=python,
                )
            except (SyntaxError, UnicodeDecodeError) as error:
                parsed[current.name] = error
        refs = parsed[current.name]
        if isinstance(refs, Exception):
            importer = walk.parent.get(current.name, current.name)
            walk.missing.setdefault(current.name, (importer, where(current, 1), str(refs)))
            continue
        for ref in refs:
            optional = ref.optional or (ref.lazy and current.kind is ModuleKind.VENDORED)
            if optional and not everything:
                continue
            at = where(current, ref.line)
            if ref.error is not None:
                walk.missing.setdefault(ref.module, (current.name, at, ref.error))
                continue
            for target, required in _targets(ref, finder):
                if target in walk.modules:
                    continue
                if target in walk.missing or target in walk.forbidden:
                    if required:
                        break
                    continue
                resolved = finder.find(target)
                if not required and resolved is None:
                    continue  # `from pkg import name`: an attribute, not a submodule
                if _is_under(target, forbidden) is not None:
                    walk.forbidden.setdefault(target, (current.name, at))
                    if required:
                        break  # its submodules are forbidden with it
                    continue
                if resolved is None:
                    walk.missing[target] = (current.name, at, "")
                    if required:
                        break  # its submodules are missing with it
                    continue
                walk.modules[target] = resolved
                walk.parent[target] = current.name
                if resolved.path is not None:
                    queue.append(target)
    return walk


def _targets(ref: ImportRef, finder: _Finder) -> Iterator[tuple[str, bool]]:
    """The modules an import runs: each parent package, the module, and for `from X import
    n` each `X.n` that is a submodule (not required: `n` may be an attribute of X)."""
    parts = ref.module.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i]), True
    if ref.names:
        base = finder.find(ref.module)
        if base is not None and base.is_package and base.path is not None:
            for name in ref.names:
                yield f"{ref.module}.{name}", False
