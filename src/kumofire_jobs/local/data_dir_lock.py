"""One process at a time owns a data directory.

The embedded bindings keep in-process state beside their files: the alarm timers of the
Durable Objects, the queue's wake-ups and its in-flight batches. A second process writing
the same files is seen by none of it (a run it creates is never delivered until a restart),
so a second `LocalEnvironment` on a directory in use is refused at once.

The lock is `flock` on `<data_dir>/lock`: held by the open file for the life of the
environment and released by the kernel when the process dies, `kill -9` included, so a
crash never leaves a stale lock behind.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

LOCK_FILE = "lock"


class DataDirectoryInUseError(RuntimeError):
    """Another process (or another environment in this one) has the data directory open."""


class DataDirectoryLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None
        # True while the kernel holds the lock for us: every earlier holder of the directory
        # is then dead (on Windows, or a file system without flock, it is False).
        self.exclusive = False

    def acquire(self) -> None:
        """Take the lock, or raise DataDirectoryInUseError naming the holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            locked = _try_lock(fd)
            if locked is False:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
                who = (
                    "another environment of this process"
                    if holder == str(os.getpid())
                    else f"another process (pid {holder}, a `kumofire-jobs dev` say)"
                )
                raise DataDirectoryInUseError(
                    f"the data directory {self.path.parent} is in use by {who}: only one "
                    "may run on it at a time. Create and manage runs through the running "
                    "one's HTTP API (POST /v1/runs), or give this one its own --data-dir"
                )
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.exclusive = locked is True

    def release(self) -> None:
        self.exclusive = False
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the file releases the lock


# True: locked; False: another holder has it; None: not enforced here (no flock).
if sys.platform == "win32":  # pragma: no cover - no flock: the lock is not enforced

    def _try_lock(fd: int) -> bool | None:
        return None

else:
    import fcntl

    def _try_lock(fd: int) -> bool | None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:  # a file system without flock: run unguarded rather than not at all
            return None
        return True
