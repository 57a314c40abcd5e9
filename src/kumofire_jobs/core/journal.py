"""What a running attempt records besides its outcome: its handler's log lines (`ctx.log`,
info and above) and its progress (`ctx.progress`).

Both are held here and written with the attempt's outcome (the finalize statement carries
them), so a short attempt adds no statement. Meanwhile they are written at most once a
second, and never in the attempt's first second: a handler that logs or reports progress for
longer costs one more D1 statement (one row) a second while it does, and its lines survive a
crash up to the last such write.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Final

from .clock import Clock, now_ms
from .history import LogBuffer, progress_value
from .history_store import HistoryStore
from .log import get_logger, limit_fields

log = get_logger()

WRITE_INTERVAL: Final = 1.0
"""Seconds between two writes of a running attempt's journal (and after its start)."""


class Journal:
    def __init__(
        self,
        *,
        store: HistoryStore,
        clock: Clock,
        run_id: str,
        token: int,
        attempt: int,
        logs: str | None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._run_id = run_id
        self._token = token
        self.attempt = attempt
        self._logs = LogBuffer(logs)
        self.progress: str | None = None  # JSON text; the start cleared the column
        self._changes = 0  # changes so far; the row holds those up to `_saved`
        self._saved = 0
        self._last_write = clock.now()  # the start wrote the row
        self._timer: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def dirty(self) -> bool:
        """Whether something was logged or reported that the row does not hold yet."""
        return self._changes != self._saved

    def logs(self) -> str | None:
        """The `logs` column as it should be now (JSON text)."""
        return self._logs.json()

    def record(self, level: str, event: str, fields: dict[str, Any]) -> None:
        """A line the handler logged, kept and written within a second."""
        if self._closed:
            return
        self._logs.add(now_ms(self._clock), self.attempt, level, event, fields)
        self._changed()

    async def set_progress(self, value: Any) -> None:
        """`ctx.progress(value)`: written now if the last write is a second old, else when it
        is; a value replaced before then is never written."""
        encoded = progress_value(value)  # ValidationError to the handler, before any change
        if self._closed:
            return
        self.progress = encoded
        self._changes += 1
        if self._timer is None and self._due():
            await self._write()
        else:
            self._changed(counted=True)

    def _due(self) -> bool:
        return self._clock.now() >= self._last_write + WRITE_INTERVAL

    def _changed(self, *, counted: bool = False) -> None:
        if not counted:
            self._changes += 1
        if self._timer is None and not self._closed:
            self._timer = asyncio.ensure_future(self._write_later())

    async def _write_later(self) -> None:
        try:
            while self.dirty and not self._closed:
                if not self._due():
                    await self._clock.sleep_until(self._last_write + WRITE_INTERVAL)
                    continue
                await self._write()
        finally:
            self._timer = None

    async def _write(self) -> None:
        async with self._lock:
            if self._closed or not self.dirty:
                return
            if not self._due():  # another write came first: this one waits its turn
                self._changed(counted=True)
                return
            await self._save()

    async def _save(self) -> None:
        changes = self._changes
        self._last_write = self._clock.now()
        try:
            await self._store.save(
                self._run_id, self._token, self.progress, self.logs(), now_ms(self._clock)
            )
        except Exception as exc:  # tried again in a second; the outcome's write carries it
            log.warning("run.journal_write_failed", run_id=self._run_id, error=repr(exc)[:500])
            return
        self._saved = changes

    async def close(self) -> None:
        """Stop writing: the attempt's outcome carries what is left. Waits for a write under
        way, so none lands after the outcome's."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lock.locked():  # a write holds it (one not yet begun sees `_closed`)
            async with self._lock:
                pass

    async def save_closed(self) -> None:
        """After `close`, write what is left if no outcome will (the run was canceled while
        the handler ran: the cancel wrote the outcome, not the handler's last lines)."""
        if self.dirty:
            async with self._lock:
                await self._save()


_RECORDED: Final[Mapping[str, str]] = {
    "info": "info",
    "msg": "info",
    "warning": "warning",
    "warn": "warning",
    "error": "error",
    "exception": "error",
    "critical": "critical",
    "fatal": "critical",
}
_LEVEL_NUMBERS: Final[Mapping[int, str]] = {20: "info", 30: "warning", 40: "error", 50: "critical"}


class RunLogger:
    """`ctx.log`: the structlog logger bound to the run (its lines go where the runtime's
    logging goes), which also keeps the lines at `info` and above in the run's journal, with
    the fields the handler gave or bound (the run id, job and attempt are the line's own)."""

    def __init__(
        self, inner: Any, journal: Journal, context: Mapping[str, Any] | None = None
    ) -> None:
        self._inner = inner
        self._journal = journal
        self._context = dict(context or {})

    def bind(self, **fields: Any) -> RunLogger:
        return RunLogger(self._inner.bind(**fields), self._journal, {**self._context, **fields})

    def new(self, **fields: Any) -> RunLogger:
        return RunLogger(self._inner.new(**fields), self._journal, fields)

    def unbind(self, *keys: str) -> RunLogger:
        context = {k: v for k, v in self._context.items() if k not in keys}
        return RunLogger(self._inner.unbind(*keys), self._journal, context)

    def try_unbind(self, *keys: str) -> RunLogger:
        context = {k: v for k, v in self._context.items() if k not in keys}
        return RunLogger(self._inner.try_unbind(*keys), self._journal, context)

    def _keep(self, level: str, event: Any, args: tuple[Any, ...], fields: dict[str, Any]) -> None:
        text = str(event)
        if args:
            try:
                text = text % args
            except (TypeError, ValueError):
                text = " ".join([text, *map(str, args)])
        kept = {**self._context, **fields}
        exc_info = kept.pop("exc_info", level == "exception")
        if exc_info:
            kept["exception"] = _exception_text(exc_info)
        self._journal.record(_RECORDED[level], text, dict(limit_fields(None, "", kept)))

    def log(self, level: int, event: Any, *args: Any, **fields: Any) -> Any:
        name = _LEVEL_NUMBERS.get(level - level % 10 if level < 60 else 50)
        if name is not None and level >= 20:
            self._keep(name, event, args, fields)
        return self._inner.log(level, event, *args, **fields)

    def __getattr__(self, name: str) -> Any:
        # `debug`, `info`, ..., and their async forms (`ainfo`); anything else is structlog's.
        if name.startswith("_"):
            raise AttributeError(name)
        level = name[1:] if name.startswith("a") and name[1:] in _RECORDED else name
        method = getattr(self._inner, name)
        if level not in _RECORDED:
            return method
        return _recording(self, level, method)


def _recording(logger: RunLogger, level: str, method: Callable[..., Any]) -> Callable[..., Any]:
    def call(event: Any = None, *args: Any, **fields: Any) -> Any:
        logger._keep(level, event, args, fields)
        return method(event, *args, **fields)

    return call


def _exception_text(exc_info: Any) -> str:
    if isinstance(exc_info, BaseException):
        return "".join(traceback.format_exception(exc_info)).rstrip()
    if isinstance(exc_info, tuple) and len(exc_info) == 3 and exc_info[1] is not None:
        return "".join(traceback.format_exception(exc_info[1])).rstrip()
    return traceback.format_exc().rstrip()
