"""The offline build of workerd's Python runtime bundle (tests/workerd/pyodide_bundle.py)."""

from __future__ import annotations

import subprocess

import pytest

from .pyodide_bundle import BUNDLE_NAME, build_bundle, replacements, workerd_src

pytestmark = pytest.mark.workerd


def test_the_replacements_are_read_from_workerds_rule() -> None:
    pairs = replacements((workerd_src() / "src/pyodide/helpers.bzl").read_text())
    olds = [old for old, _ in pairs]
    assert "new WebAssembly.Module" in olds and "Date.now" in olds
    # Pyodide 0.28.2's pyodide.asm.js is CommonJS: the rule makes it an ES module.
    made_esm = dict(pairs)["var _createPyodideModule"]
    assert made_esm.rstrip().endswith("export const _createPyodideModule")
    assert 'from "pyodide-internal:pool/builtin_wrappers"' in made_esm


def test_the_bundle_holds_the_three_modules_workerd_loads() -> None:
    directory = build_bundle()
    assert build_bundle() == directory  # cached: the same inputs give the same place
    with (directory / BUNDLE_NAME).open("rb") as bundle:
        decoded = subprocess.run(
            ["capnp", "decode", "--short", str(workerd_src() / "src/workerd/jsg/modules.capnp"),
             "Bundle", f"-I{workerd_src() / 'src'}"],
            stdin=bundle, capture_output=True, check=True, timeout=120,
        ).stdout  # fmt: skip
    head = decoded[:4000].decode(errors="replace")
    assert 'name = "pyodideRuntime-internal:emscriptenSetup"' in head
    for name in ("pyodide.asm.wasm", "python_stdlib.zip"):
        assert f'name = "pyodideRuntime-internal:{name}"'.encode() in decoded
    assert b"type = internal" in decoded
