"""A remote handler's answer that carries back what a local handler gives through its `ctx`:
its log lines, its progress, and its result or its error.

A target Worker's method runs in another isolate, so it has no `JobContext`: the service's
`ctx.log` and `ctx.progress` cannot be reached from it during the call (Workers RPC can pass a
function as a stub, but a Python target receives it as a bare JavaScript function that does
not convert its arguments, and a JavaScript or older Python target would get an argument it
does not expect). What the target can do is answer with them. An answer that is an object with
`"kumofireJobsAnswer": 1` is such an answer, never a result:

```json
{"kumofireJobsAnswer": 1,
 "result": {"sent_to": "a@example.com"},
 "progress": {"done": 3, "total": 3},
 "logs": [{"level": "info", "event": "sent", "fields": {"to": "a@example.com"},
           "at": "2027-01-01T00:00:01.250Z"}],
 "error": null}
```

Every member but the marker may be left out. The service replays `logs` through the run's
`ctx.log`, in order (each line's `at`, the target's time, as the field `remote_at`), then
stores `progress` as `ctx.progress` would, then either fails the attempt with `error` (a
string; `non_retryable:` at its start fails the run at once, as a raised error's message does)
or returns `result` as the run's result. So a target that catches its own error can still
carry its log lines back. `RemoteContext` builds such answers in a Python target; any target
(JavaScript too) can write the object itself. An answer the service cannot read (another
version, an unknown member, a member of the wrong type, a progress too large to keep) fails
the run without a retry, saying what is wrong: the target's code and the service disagree, and
a retry would not change that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ..api.wire import run_from_wire
from ..core.clock import Clock, SystemClock, now_ms
from ..core.context import JobContext
from ..core.errors import NonRetryableError, ValidationError
from ..core.history import progress_value
from ..core.models import JobRun
from ..core.times import format_ms

__all__ = [
    "ANSWER_KEY",
    "ANSWER_VERSION",
    "RemoteAnswerError",
    "RemoteContext",
    "RemoteHandlerError",
    "carry_back",
    "is_carrying_answer",
]

ANSWER_KEY: Final = "kumofireJobsAnswer"
ANSWER_VERSION: Final = 1
LEVELS: Final = ("debug", "info", "warning", "error", "critical")
_MEMBERS: Final = frozenset({ANSWER_KEY, "result", "progress", "logs", "error"})
_LINE_MEMBERS: Final = frozenset({"level", "event", "fields", "at"})
# Fields a replayed line cannot carry under their own name (structlog's own, the line's, or
# the log method's own parameters: `self`).
_RESERVED_FIELDS: Final = frozenset(
    {"event", "level", "timestamp", "exc_info", "remote_at", "self"}
)
_NON_RETRYABLE_PREFIX: Final = "non_retryable:"


class RemoteHandlerError(Exception):
    """A remote handler's call failed (a retry, if attempts are left): `str()` is
    `"<BINDING>.<method>: <the last line of the error it raised>"`, or the `error` its
    answer carried."""


class RemoteAnswerError(NonRetryableError):
    """An answer marked `kumofireJobsAnswer` that the service cannot read."""


def is_carrying_answer(answer: Any) -> bool:
    return isinstance(answer, Mapping) and ANSWER_KEY in answer


def _checked(answer: Mapping[str, Any]) -> None:
    version = answer[ANSWER_KEY]
    if isinstance(version, bool) or version != ANSWER_VERSION:
        raise RemoteAnswerError(
            f"{ANSWER_KEY} is {version!r}: this service reads version {ANSWER_VERSION}"
        )
    unknown = sorted(str(key) for key in set(answer) - _MEMBERS)
    if unknown:
        raise RemoteAnswerError(
            f"the answer has unknown member(s) {', '.join(unknown)} (known: "
            f"{', '.join(sorted(_MEMBERS))})"
        )
    logs = answer.get("logs")
    if logs is not None and not isinstance(logs, list):
        raise RemoteAnswerError(f"the answer's logs must be a list, not {type(logs).__name__}")
    for i, line in enumerate(logs or ()):
        where = f"the answer's logs[{i}]"
        if not isinstance(line, Mapping):
            raise RemoteAnswerError(f"{where} must be an object, not {type(line).__name__}")
        unknown = sorted(str(key) for key in set(line) - _LINE_MEMBERS)
        if unknown:
            raise RemoteAnswerError(f"{where} has unknown member(s) {', '.join(unknown)}")
        if line.get("level", "info") not in LEVELS:
            raise RemoteAnswerError(f"{where}.level must be one of {', '.join(LEVELS)}")
        if not isinstance(line.get("event"), str):
            raise RemoteAnswerError(f"{where}.event must be a string")
        if not isinstance(line.get("fields") or {}, Mapping):
            raise RemoteAnswerError(f"{where}.fields must be an object")
        if not isinstance(line.get("at", ""), str | None):
            raise RemoteAnswerError(f"{where}.at must be an RFC 3339 string")
    error = answer.get("error")
    if error is not None and not isinstance(error, str):
        raise RemoteAnswerError(f"the answer's error must be a string, not {type(error).__name__}")
    if "progress" in answer:
        try:  # (as `ctx.progress` checks it: found now, nothing of the answer is replayed)
            progress_value(answer["progress"])
        except ValidationError as exc:
            raise RemoteAnswerError(f"the answer's {exc}") from None


def _fields(line: Mapping[str, Any]) -> dict[str, Any]:
    fields = {
        (f"remote_{key}" if key in _RESERVED_FIELDS else str(key)): value
        for key, value in (line.get("fields") or {}).items()
    }
    if line.get("at") is not None:
        fields["remote_at"] = line["at"]
    return fields


async def carry_back(answer: Mapping[str, Any], ctx: JobContext, handler: str) -> Any:
    """Replay `answer`'s log lines and progress into the run (`ctx`), then raise its error or
    return its result. `handler` names the call in the error (`HANDLERS.run_job`)."""
    try:
        _checked(answer)
    except RemoteAnswerError as exc:
        raise RemoteAnswerError(f"{handler}: {exc}") from None
    for line in answer.get("logs") or ():
        getattr(ctx.log, line.get("level", "info"))(line["event"], **_fields(line))
    if "progress" in answer:
        await ctx.progress(answer["progress"])
    error = answer.get("error")
    if error is not None:
        summary = f"{handler}: {error}"
        if error.strip().startswith(_NON_RETRYABLE_PREFIX):
            raise NonRetryableError(summary)
        raise RemoteHandlerError(summary)
    return answer.get("result")


# --- in the target Worker ---------------------------------------------------------------------


class _RemoteLog:
    """`ctx.log` of a `RemoteContext`: `info(event, **fields)` and the other levels keep the
    line for the answer (a level below `info` is not kept by the service, as for a local
    handler)."""

    def __init__(self, lines: list[dict[str, Any]], clock: Clock) -> None:
        self._lines = lines
        self._clock = clock

    def _line(self, level: str, event: str, fields: dict[str, Any]) -> None:
        at = format_ms(now_ms(self._clock))
        self._lines.append({"level": level, "event": str(event), "fields": fields, "at": at})

    def debug(self, event: str, **fields: Any) -> None:
        self._line("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._line("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._line("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._line("error", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        self._line("critical", event, fields)


class RemoteContext:
    """In a Python target Worker's method, what a local handler's `ctx` gives, carried back in
    the answer: `ctx.job` (the run, a `JobRun`), `ctx.children`, `ctx.log.info(event,
    **fields)` (and the other levels), `await ctx.progress(value)`; end with `return
    ctx.answer(result)`, or `return ctx.failed(exc)` to fail the attempt and keep the lines
    logged (a `NonRetryableError` fails the run at once). Lines and progress reach the run when
    the method returns, not while it runs. Each line keeps its time by `clock` (the system's
    by default).

    ```python
    async def run_job(self, run):
        ctx = RemoteContext(run)
        try:
            ctx.log.info("sending", to=ctx.job.payload["to"])
            await ctx.progress({"step": 1})
            return ctx.answer({"sent": True})
        except Exception as exc:
            return ctx.failed(exc)
    ```
    """

    def __init__(self, run: Mapping[str, Any], *, clock: Clock | None = None) -> None:
        self.job: JobRun = run_from_wire(run)
        self.children: list[JobRun] = [run_from_wire(c) for c in run.get("children") or ()]
        self._lines: list[dict[str, Any]] = []
        self._progress: list[Any] = []  # the last value reported, if any
        self.log = _RemoteLog(self._lines, clock or SystemClock())

    async def progress(self, value: Any) -> None:
        """Keep `value` as the run's progress (the last one is carried back)."""
        self._progress[:] = [value]

    def _answer(self) -> dict[str, Any]:
        answer: dict[str, Any] = {ANSWER_KEY: ANSWER_VERSION}
        if self._lines:
            answer["logs"] = list(self._lines)
        if self._progress:
            answer["progress"] = self._progress[0]
        return answer

    def answer(self, result: Any = None) -> dict[str, Any]:
        """The method's answer: success, `result` the run's result, with the lines and the
        progress."""
        return {**self._answer(), "result": result}

    def failed(self, error: BaseException | str) -> dict[str, Any]:
        """The method's answer: a failed attempt (retried under the service's policy; at once
        for a `NonRetryableError` or a message starting `non_retryable:`), with the lines and
        the progress."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        if isinstance(error, NonRetryableError) and not text.startswith(_NON_RETRYABLE_PREFIX):
            text = f"{_NON_RETRYABLE_PREFIX} {text}"
        return {**self._answer(), "error": text}
