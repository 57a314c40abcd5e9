"""Telling a full data directory from other storage failures, for a one-line message."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from ..core.storage_full import FULL_ERRNOS, FULL_MESSAGE, causes

# Below this much free space the data directory counts as full: `dev` does not start, and a
# "disk I/O error" is taken for a full disk (SQLite reports SQLITE_IOERR, not SQLITE_FULL,
# when it cannot create a database's -wal or -shm file).
NEARLY_FULL_BYTES = 1 << 20


def free_bytes(path: Path) -> int | None:
    """Free space on the filesystem of `path` (or of its nearest existing parent)."""
    for candidate in (path, *path.absolute().parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def full_disk_reason(error: BaseException, data_dir: Path) -> str | None:
    """Why `error` says the data directory is out of space, or None if it does not."""
    io_error: str | None = None
    for cause in causes(error):
        if isinstance(cause, OSError) and cause.errno in FULL_ERRNOS:
            return cause.strerror or str(cause)
        if isinstance(cause, sqlite3.Error):
            name = str(getattr(cause, "sqlite_errorname", "") or "")
            if name == "SQLITE_FULL" or FULL_MESSAGE in str(cause):
                return FULL_MESSAGE
            if name.startswith("SQLITE_IOERR") or "disk I/O error" in str(cause):
                io_error = str(cause)
        elif FULL_MESSAGE in str(cause):  # a D1Error that carries it
            return FULL_MESSAGE
    if io_error is not None:
        free = free_bytes(data_dir)
        if free is not None and free < NEARLY_FULL_BYTES:
            return f"{io_error}, {free} bytes free"
    return None


def full_disk_message(error: BaseException, data_dir: Path) -> str | None:
    """The line to print when `error` comes from a full data directory, else None."""
    reason = full_disk_reason(error, data_dir)
    return None if reason is None else full_disk_line(data_dir, reason)


def full_disk_line(data_dir: Path, reason: str) -> str:
    return (
        f"kumofire-jobs: the data directory {data_dir} is full ({reason}); "
        "free space and start again"
    )
