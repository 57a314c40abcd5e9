"""The static import graph of `cloudflare check`, on small trees."""

from __future__ import annotations

import sysconfig
import textwrap
from pathlib import Path

import pytest

from kumofire_jobs.deploy.imports import (
    ImportGraph,
    ImportRef,
    ModuleKind,
    build_import_graph,
    collect_imports,
    stdlib_modules,
)
from tests.support.deploy import REPO


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def graph_of(tmp_path: Path, files: dict[str, str], **options: object) -> ImportGraph:
    upload = tree(tmp_path / "upload", files)
    vendor = tmp_path / "upload" / "python_modules"
    return build_import_graph(
        upload / "entry.py",
        upload,
        vendor if vendor.is_dir() else None,
        **options,  # type: ignore[arg-type]
    )


def test_a_missing_module_is_named_with_its_chain(tmp_path: Path) -> None:
    graph = graph_of(
        tmp_path,
        {
            "entry.py": "import app\n",
            "app/__init__.py": "from .jobs import run\n",
            "app/jobs.py": "import json\n\nimport notvendored.sub\n",
        },
    )
    assert not graph.ok
    assert [f.module for f in graph.missing] == ["notvendored"]  # its submodule: not re-reported
    finding = graph.missing[0]
    assert finding.chain == ("entry", "app", "app.jobs", "notvendored")
    assert finding.location == "app/jobs.py:3"
    assert "notvendored (imported at app/jobs.py:3; chain: entry -> app -> app.jobs" in (
        finding.describe()
    )
    assert graph.modules["json"].kind is ModuleKind.STDLIB
    assert graph.modules["app.jobs"].kind is ModuleKind.UPLOAD


def test_sqlite3_two_hops_away_is_forbidden_with_its_chain(tmp_path: Path) -> None:
    graph = graph_of(
        tmp_path,
        {
            "entry.py": "from a import x\n",
            "a.py": "import b\nx = 1\n",
            "b.py": '"""b"""\n\ndef store():\n    import sqlite3\n',
        },
    )
    assert graph.missing == []
    assert [(f.module, f.chain, f.location) for f in graph.forbidden] == [
        ("sqlite3", ("entry", "a", "b", "sqlite3"), "b.py:4")
    ]
    assert "sqlite3" not in graph.modules


def test_the_local_bindings_are_forbidden_however_imported(tmp_path: Path) -> None:
    for number, statement in enumerate(
        [
            "import kumofire_jobs.local.d1",
            "from kumofire_jobs.local import d1",
            "from kumofire_jobs import local",
            "import importlib\nimportlib.import_module('kumofire_jobs.local')",
        ]
    ):
        graph = graph_of(
            tmp_path / str(number),
            {
                "entry.py": "import kumofire_jobs.helpers\n",
                "kumofire_jobs/__init__.py": "",
                "kumofire_jobs/helpers.py": f"{statement}\n",
                "kumofire_jobs/local/__init__.py": "",
                "kumofire_jobs/local/d1.py": "import sqlite3\n",
            },
        )
        assert [f.module for f in graph.forbidden] == ["kumofire_jobs.local"], statement
        assert graph.forbidden[0].chain == (
            "entry",
            "kumofire_jobs.helpers",
            "kumofire_jobs.local",
        )


def test_type_checking_imports_are_left_out(tmp_path: Path) -> None:
    graph = graph_of(
        tmp_path,
        {
            "entry.py": """\
                import typing
                from typing import TYPE_CHECKING

                if TYPE_CHECKING:
                    import sqlite3
                    from kumofire_jobs.local import d1
                    import not_installed
                else:
                    import runtime_only

                if typing.TYPE_CHECKING:
                    import also_not_installed

                if not TYPE_CHECKING:
                    import json
                """,
            "runtime_only.py": "",
        },
    )
    assert graph.ok, (graph.missing, graph.forbidden)
    assert "runtime_only" in graph.modules and "json" in graph.modules
    assert "not_installed" not in graph.modules


def test_function_level_imports_are_followed(tmp_path: Path) -> None:
    graph = graph_of(
        tmp_path,
        {
            "entry.py": """\
                class Default:
                    async def fetch(self, request):
                        from handlers import handle
                        return await handle(request)
                """,
            "handlers.py": "async def handle(request):\n    import requests\n",
        },
    )
    assert [f.module for f in graph.missing] == ["requests"]
    assert graph.missing[0].chain == ("entry", "handlers", "requests")


def test_imports_behind_except_import_error_are_optional(tmp_path: Path) -> None:
    graph = graph_of(
        tmp_path,
        {
            "entry.py": """\
                try:
                    import ujson as json
                except ImportError:
                    import json
                try:
                    import plugin
                except (ModuleNotFoundError, RuntimeError):
                    plugin = None
                """,
            "plugin.py": "import plugin_dependency\n",  # only reached optionally
        },
    )
    assert graph.ok
    assert [f.module for f in graph.optional_missing] == ["ujson", "plugin_dependency"]
    assert graph.required == {"entry", "json"}
    assert "plugin" in graph.modules


def test_lazy_imports_of_vendored_packages_are_optional_but_ours_are_not(
    tmp_path: Path,
) -> None:
    graph = graph_of(
        tmp_path,
        {
            "entry.py": "import lib\n\ndef handler():\n    import mine_missing\n",
            "python_modules/lib/__init__.py": "def to_pytz():\n    import pytz\n",
        },
    )
    assert [f.module for f in graph.missing] == ["mine_missing"]
    assert [f.module for f in graph.optional_missing] == ["pytz"]
    assert graph.optional_missing[0].location == "python_modules/lib/__init__.py:2"
    assert graph.modules["lib"].kind is ModuleKind.VENDORED


def test_the_upload_root_comes_before_python_modules(tmp_path: Path) -> None:
    graph = graph_of(
        tmp_path,
        {
            "entry.py": "import shared\n",
            "shared.py": "",
            "python_modules/shared/__init__.py": "import missing\n",
        },
    )
    assert graph.ok
    assert graph.modules["shared"].kind is ModuleKind.UPLOAD


def test_relative_imports_resolve_against_their_package(tmp_path: Path) -> None:
    graph = graph_of(
        tmp_path,
        {
            "entry.py": "from pkg.sub import mod\n",
            "pkg/__init__.py": "from . import util\n",
            "pkg/util.py": "",
            "pkg/sub/__init__.py": "",
            "pkg/sub/mod.py": (
                "from ..util import x\nfrom .. import nothing_here\nfrom ...x import y\n"
            ),
        },
    )
    assert {"pkg", "pkg.util", "pkg.sub", "pkg.sub.mod"} <= set(graph.modules)
    # `from .. import nothing_here` may name an attribute of pkg: no finding; the import
    # beyond the top-level package is one.
    assert [(f.module, f.detail) for f in graph.missing] == [
        ("...x", "relative import beyond the top-level package")
    ]


def test_dynamic_imports_of_literal_names_are_followed(tmp_path: Path) -> None:
    graph = graph_of(
        tmp_path,
        {
            "entry.py": """\
                import importlib
                from importlib import import_module

                def later():
                    return importlib.import_module("workers.asgi"), import_module("gone")
                """,
        },
        pywrangler_modules={"workers"},
    )
    assert graph.modules["workers.asgi"].kind is ModuleKind.PYWRANGLER
    assert [f.module for f in graph.missing] == ["gone"]


def test_version_and_platform_branches_are_decided_for_pyodide_313(tmp_path: Path) -> None:
    graph = graph_of(
        tmp_path,
        {
            "entry.py": """\
                import os
                import sys

                if sys.version_info < (3, 11):
                    import tomli
                if sys.version_info >= (3, 14):
                    import annotationlib_backport
                elif sys.version_info >= (3, 13):
                    import _interpreters
                if sys.version_info[:2] == (3, 13):
                    import new_enough
                if sys.platform == "win32" or os.name == "nt":
                    import winonly
                if sys.platform.startswith("linux"):
                    import linuxonly
                if sys.platform == "emscripten":
                    import pyodide
                if some_flag():
                    import maybe
                """,
            "new_enough.py": "",
            "maybe.py": "",
        },
    )
    assert graph.ok, graph.missing
    assert {"_interpreters", "new_enough", "pyodide", "maybe"} <= set(graph.modules)
    assert graph.modules["_interpreters"].kind is ModuleKind.STDLIB
    assert graph.modules["pyodide"].kind is ModuleKind.PLATFORM


def test_modules_removed_by_python_313_are_missing(tmp_path: Path) -> None:
    assert "cgi" not in stdlib_modules() and "_interpqueues" in stdlib_modules()
    graph = graph_of(tmp_path, {"entry.py": "import cgi\nimport tomllib\n"})
    assert [f.module for f in graph.missing] == ["cgi"]


def test_pywrangler_packages_count_only_when_named(tmp_path: Path) -> None:
    files = {"entry.py": "import msgspec\nfrom workers import WorkerEntrypoint\n"}
    assert [f.module for f in graph_of(tmp_path / "a", files).missing] == ["msgspec", "workers"]
    graph = graph_of(tmp_path / "b", files, pywrangler_modules={"msgspec", "workers"})
    assert graph.ok
    assert graph.count(ModuleKind.PYWRANGLER) == 2


def test_a_submodule_missing_from_an_uploaded_package_is_missing(tmp_path: Path) -> None:
    graph = graph_of(
        tmp_path,
        {
            "entry.py": "import app.gone\nfrom app import attribute\n",
            "app/__init__.py": "attribute = 1\n",
        },
    )
    assert [f.module for f in graph.missing] == ["app.gone"]


def test_collect_imports_reports_each_statement() -> None:
    source = textwrap.dedent(
        """\
        import a, b.c
        from d import e, f
        from . import g
        from .h import i

        def later():
            try:
                import j
            except ImportError:
                pass
        """
    )
    refs = collect_imports(source, "pkg.mod")
    assert refs == [
        ImportRef("a", 1),
        ImportRef("b.c", 1),
        ImportRef("d", 2, ("e", "f")),
        ImportRef("pkg", 3, ("g",)),
        ImportRef("pkg.h", 4, ("i",)),
        ImportRef("j", 8, optional=True, lazy=True),
    ]
    assert collect_imports("from . import x\n", "pkg", is_package=True) == [
        ImportRef("pkg", 1, ("x",))
    ]


def test_the_repository_entry_graph_is_clean() -> None:
    """The Worker entry of this repository, over src/ and this environment's packages."""
    site = Path(sysconfig.get_paths()["purelib"])
    graph = build_import_graph(
        REPO / "src" / "entry.py", REPO / "src", site, pywrangler_modules={"workers", "msgspec"}
    )
    assert graph.forbidden == [], [f.describe() for f in graph.forbidden]
    assert graph.missing == [], [f.describe() for f in graph.missing]
    assert "kumofire_jobs.cloudflare.worker" in graph.required
    assert "kumofire_coordinator" in graph.required
    assert not any(
        m.startswith(("kumofire_jobs.local", "kumofire_jobs.deploy")) for m in graph.modules
    )
    assert "sqlite3" not in graph.modules


@pytest.mark.parametrize("source", ["def broken(:\n", "\xff\xfe"])
def test_an_unreadable_module_is_reported(tmp_path: Path, source: str) -> None:
    upload = tmp_path / "upload"
    upload.mkdir()
    (upload / "entry.py").write_text("import bad\n", encoding="utf-8")
    (upload / "bad.py").write_bytes(source.encode("latin-1"))
    graph = build_import_graph(upload / "entry.py", upload)
    assert [f.module for f in graph.missing] == ["bad"]
