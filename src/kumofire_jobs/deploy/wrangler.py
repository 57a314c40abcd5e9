"""Locating the project's wrangler and running it non-interactively.

The search order: `node_modules/.bin/wrangler` in the config file's directory or any parent
(the project's own, pinned wrangler), then `wrangler` on PATH, then `npx --no-install
wrangler` (which finds one npm already has, and never downloads).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "INSTALL_HINT",
    "DeployError",
    "Wrangler",
    "WranglerNotFoundError",
    "WranglerResult",
    "find_wrangler",
    "wrangler_env",
]

INSTALL_HINT = (
    "install it in the project: `npm install` (when its package.json lists wrangler) "
    "or `npm i -D wrangler`"
)


class DeployError(Exception):
    """A `kumofire-jobs cloudflare` command cannot go on; the message says why."""


class WranglerNotFoundError(DeployError):
    def __init__(self, start: Path) -> None:
        super().__init__(
            f"wrangler not found (looked for node_modules/.bin/wrangler from {start} upward, "
            f"for `wrangler` on PATH and through `npx --no-install wrangler`): {INSTALL_HINT}"
        )


@dataclass(frozen=True)
class WranglerResult:
    args: tuple[str, ...]
    returncode: int
    output: str  # stdout and stderr, interleaved

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def wrangler_env(
    base: Mapping[str, str] | None = None,
    *,
    state_dir: Path | None = None,
) -> dict[str, str]:
    """The environment wrangler runs in: no prompts (CI), no metrics, no banner (the banner is
    what checks npm for a newer wrangler), no colors in what we parse. With `state_dir`, its
    config, logs and consent files go there instead of the user's home (only for commands
    that need no Cloudflare login)."""
    env = dict(os.environ if base is None else base)
    env.update(
        CI="true",
        WRANGLER_SEND_METRICS="false",
        WRANGLER_HIDE_BANNER="true",
        NO_COLOR="1",
        FORCE_COLOR="0",
    )
    if state_dir is not None:
        env["XDG_CONFIG_HOME"] = str(state_dir / "config")
        env["WRANGLER_LOG_PATH"] = str(state_dir / "logs")
    return env


@dataclass(frozen=True)
class Wrangler:
    """A way to run wrangler: the command line that starts it."""

    command: tuple[str, ...]

    def describe(self) -> str:
        return " ".join(self.command)

    def run(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        timeout: float = 600,
    ) -> WranglerResult:
        try:
            done = subprocess.run(
                [*self.command, *args],
                cwd=cwd,
                env=dict(env) if env is not None else wrangler_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError as error:
            raise DeployError(f"cannot run {self.describe()}: {error}; {INSTALL_HINT}") from error
        except subprocess.TimeoutExpired as error:
            raise DeployError(
                f"`{self.describe()} {' '.join(args)}` did not finish in {timeout:.0f} s"
            ) from error
        output = done.stdout.decode("utf-8", errors="replace")
        return WranglerResult(tuple(args), done.returncode, output)


def _local_binaries(start: Path) -> list[Path]:
    names = ["wrangler.cmd", "wrangler"] if os.name == "nt" else ["wrangler"]
    found = []
    for directory in [start, *start.parents]:
        for name in names:
            candidate = directory / "node_modules" / ".bin" / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                found.append(candidate)
    return found


def find_wrangler(start: Path, *, path: str | None = None, probe_npx: bool = True) -> Wrangler:
    """The wrangler to run for the project whose config file is in `start`.

    `path` replaces the PATH searched (tests). `npx --no-install wrangler` is used only when it
    answers `--version` (it fails when npm has no wrangler, rather than downloading one)."""
    start = start.resolve()
    local = _local_binaries(start)
    if local:
        return Wrangler((str(local[0]),))
    on_path = shutil.which("wrangler", path=path)
    if on_path is not None:
        return Wrangler((on_path,))
    npx = shutil.which("npx", path=path)
    if npx is not None and probe_npx:
        candidate = Wrangler((npx, "--no-install", "wrangler"))
        env = wrangler_env()
        if path is not None:
            env["PATH"] = path
        try:
            done = subprocess.run(
                [*candidate.command, "--version"],
                cwd=start,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=120,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            done = None
        if done is not None and done.returncode == 0:
            return candidate
    raise WranglerNotFoundError(start)
