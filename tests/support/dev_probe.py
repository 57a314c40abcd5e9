"""`python -m tests.support.dev_probe ARGS`: `kumofire-jobs ARGS` with calls of interest reported
on stderr as they are made, what a test observes from outside the process:

- `fdatasync: <path>` for every `os.fdatasync` and `os.fsync` (SQLite's own syncs are not
  Python calls; the embedded bindings' WAL sync at FULL is, `local/wal_sync.py`);
- `sleep: <seconds>` for every `asyncio.sleep` of more than zero seconds (a poll).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any


def _reporting_sync(sync: Callable[[Any], None]) -> Callable[[Any], None]:
    def reported(fd: Any) -> None:
        sync(fd)
        print(f"fdatasync: {os.readlink(f'/proc/self/fd/{fd}')}", file=sys.stderr, flush=True)

    return reported


def _reporting_sleep(sleep: Callable[..., Any]) -> Callable[..., Any]:
    async def reported(delay: float, result: Any = None) -> Any:
        if delay > 0:
            print(f"sleep: {delay}", file=sys.stderr, flush=True)
        return await sleep(delay, result)

    return reported


if __name__ == "__main__":
    os.fsync = _reporting_sync(os.fsync)  # type: ignore[assignment]
    if hasattr(os, "fdatasync"):
        os.fdatasync = _reporting_sync(os.fdatasync)  # type: ignore[assignment]
    asyncio.sleep = _reporting_sleep(asyncio.sleep)
    from kumofire_jobs.cli import main  # after the patches: wal_sync takes os.fdatasync at import

    sys.exit(main(sys.argv[1:]))
