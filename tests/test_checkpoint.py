"""WAL checkpoints in a background thread: asked for every N writes, never on the writer."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from kumofire_jobs.local import checkpoint


def _wal_frames(conn: sqlite3.Connection) -> tuple[int, int]:
    """(frames in the log, frames already copied back): a no-op checkpoint reports them."""
    _, log, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return log, done


def _writer(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    checkpoint.configure(conn)
    conn.execute("CREATE TABLE t (x)")
    return conn


def test_configure_leaves_routine_checkpoints_to_the_checkpointer(tmp_path: Path) -> None:
    conn = _writer(tmp_path / "db.sqlite")
    (pages,) = conn.execute("PRAGMA wal_autocheckpoint").fetchone()
    assert pages == checkpoint.SAFETY_NET_PAGES
    (limit,) = conn.execute("PRAGMA journal_size_limit").fetchone()
    assert limit == checkpoint.JOURNAL_SIZE_LIMIT  # a restarted WAL is cut back to it
    conn.close()


def test_every_n_writes_one_background_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    conn = _writer(path)
    checkpointer = checkpoint.Checkpointer(path, every=5)
    for i in range(4):
        conn.execute("INSERT INTO t VALUES (?)", (i,))
        checkpointer.wrote()
    checkpointer.close()
    assert checkpointer.checkpoints == 0  # not yet asked: no thread either
    checkpointer = checkpoint.Checkpointer(path, every=5)
    for i in range(5):
        conn.execute("INSERT INTO t VALUES (?)", (i,))
        checkpointer.wrote()
    checkpointer.close()  # returns after the checkpoint it was asked for
    assert checkpointer.checkpoints == 1
    log, done = _wal_frames(conn)
    assert log == done  # everything in the log is in the database file
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone() == (9,)
    conn.close()


def test_without_threads_the_writer_keeps_its_safety_net(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    path = tmp_path / "db.sqlite"
    conn = _writer(path)
    checkpointer = checkpoint.Checkpointer(path, every=2)
    for i in range(6):
        conn.execute("INSERT INTO t VALUES (?)", (i,))
        checkpointer.wrote()  # never raises
    checkpointer.close()
    assert checkpointer.checkpoints == 0
    conn.close()
