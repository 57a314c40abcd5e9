"""Remote handlers: job names whose handler is a method of another Worker, reached through a
service binding.

The routing is one Worker variable, `KUMOFIRE_REMOTE_HANDLERS`, from job name to the service
binding and the RPC method that runs it (`method` defaults to `run_job`):

```toml
[[services]]
binding = "HANDLERS"
service = "my-handlers"          # the other Worker
entrypoint = "Handlers"          # its WorkerEntrypoint class

[vars.KUMOFIRE_REMOTE_HANDLERS]
notify = { binding = "HANDLERS", method = "run_job" }
```

The same object as JSON text works too (a `.dev.vars` line, a secret, `wrangler --var`).

A run of `notify` calls `env.HANDLERS.run_job(run)`: one positional argument, the run as the
HTTP API answers it (`GET /v1/runs/{id}`), as it is while this attempt runs (`status`
`"running"`, `attempt` 1 on the first execution, `max_attempts`, `last_error` of the previous
attempt), with `children`: a flow parent's children as a local handler's `ctx.children` has
them (each as the HTTP API answers a run, `result` included), `[]` for any other run.
Returning is success, and the value returned is the run's `result`, as a local handler's is
(JSON, at most 64 KiB; one that cannot be kept fails the run without a retry), unless it is an
object marked `"kumofireJobsAnswer": 1`, which carries the target's log lines and progress
back with the result or an error (`remote_answer.py`; `RemoteContext` writes it in a Python
target). Raising is a failed attempt, retried by the runtime's `RetryPolicy`; an error whose
message starts with `non_retryable:`, or a Python `NonRetryableError` (recognized by name:
Workers RPC carries an error's message and the Python traceback, not its type), fails the run
at once. The lease is renewed in the background while the call runs, as for a local handler.

A name may be routed here or registered in the runtime, not both (`RemoteHandlersError`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..api.wire import run_from_wire, run_to_wire
from ..core.context import Handler, JobContext
from ..core.errors import NonRetryableError, RemoteHandlersError
from ..core.models import JobRun
from ..core.validation import MAX_NAME_CHARS
from .remote_answer import (
    ANSWER_KEY,
    RemoteAnswerError,
    RemoteContext,
    RemoteHandlerError,
    carry_back,
    is_carrying_answer,
)

__all__ = [
    "ANSWER_KEY",
    "DEFAULT_METHOD",
    "NON_RETRYABLE_PREFIX",
    "REMOTE_HANDLERS_VAR",
    "RemoteAnswerError",
    "RemoteContext",
    "RemoteHandler",
    "RemoteHandlerError",
    "RemoteRoute",
    "is_non_retryable",
    "parse_routes",
    "remote_children",
    "remote_handlers",
    "remote_run",
    "run_to_remote",
]

REMOTE_HANDLERS_VAR: Final = "KUMOFIRE_REMOTE_HANDLERS"
DEFAULT_METHOD: Final = "run_job"
NON_RETRYABLE_PREFIX: Final = "non_retryable:"

_ROUTE_KEYS: Final = frozenset({"binding", "method"})
_IDENTIFIER: Final = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*\Z")
# Names a service binding answers itself instead of forwarding as RPC (HTTP, sockets), or that
# would make the stub look like a promise.
_NOT_RPC: Final = frozenset({"fetch", "connect", "then", "constructor"})
_NON_RETRYABLE_TYPE: Final = "NonRetryableError"
# How Pyodide folds a Python exception's traceback into a JavaScript error's message.
_PYTHON_ERROR_PREFIX: Final = "PythonError: "


@dataclass(frozen=True, slots=True)
class RemoteRoute:
    """One job name, routed to `env.<binding>.<method>(run)`."""

    job: str
    binding: str
    method: str = DEFAULT_METHOD

    def __str__(self) -> str:
        return f"{self.binding}.{self.method}"


# --- The routing ------------------------------------------------------------------------------


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"


def _route(job: Any, spec: Any) -> RemoteRoute:
    where = f"{REMOTE_HANDLERS_VAR}[{job!r}]"
    if not isinstance(job, str) or not job:
        raise RemoteHandlersError(f"{REMOTE_HANDLERS_VAR}: job names must be non-empty strings")
    if len(job) > MAX_NAME_CHARS:
        raise RemoteHandlersError(
            f"{where}: the job name is longer than {MAX_NAME_CHARS} characters"
        )
    if "/" in job:
        raise RemoteHandlersError(
            f"{where}: a job name must not contain '/' (it is a path segment in the HTTP API)"
        )
    if not isinstance(spec, Mapping):
        raise RemoteHandlersError(
            f'{where} must be an object {{"binding": "<SERVICE BINDING>", "method": '
            f'"<RPC method>"}}, not {_json_kind(spec)}'
        )
    unknown = sorted(str(key) for key in set(spec) - _ROUTE_KEYS)
    if unknown:
        raise RemoteHandlersError(
            f"{where} has unknown field(s): {', '.join(unknown)} (known: binding, method)"
        )
    binding = spec.get("binding")
    if not isinstance(binding, str) or not _IDENTIFIER.match(binding):
        raise RemoteHandlersError(
            f"{where}.binding must be the name of a service binding of this Worker (a "
            f'[[services]] binding in wrangler.toml, like "HANDLERS"), got {binding!r}'
        )
    method = spec.get("method", DEFAULT_METHOD)
    if not isinstance(method, str) or not _IDENTIFIER.match(method) or method.startswith("_"):
        raise RemoteHandlersError(
            f"{where}.method must be the name of a public RPC method of the target Worker's "
            f"entrypoint (like {DEFAULT_METHOD!r}), got {method!r}"
        )
    if method in _NOT_RPC:
        raise RemoteHandlersError(
            f"{where}.method {method!r} is not an RPC method: a service binding's {method}() is "
            "the platform's own; name a method of the target's entrypoint class"
        )
    return RemoteRoute(job=job, binding=binding, method=method)


def parse_routes(value: Any) -> dict[str, RemoteRoute]:
    """The routes of a `KUMOFIRE_REMOTE_HANDLERS` value: an object (a TOML table under
    `[vars]` reaches the Worker as one) or its JSON text; None or an empty string is no
    routes. Anything else raises `RemoteHandlersError` saying what is wrong."""
    if value is None:
        return {}
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise RemoteHandlersError(f"{REMOTE_HANDLERS_VAR} is not valid JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise RemoteHandlersError(
            f"{REMOTE_HANDLERS_VAR} must be an object from job name to "
            f'{{"binding": ..., "method": ...}}, not {_json_kind(value)}'
        )
    return {job: _route(job, spec) for job, spec in value.items()}


def remote_handlers(
    routes: Mapping[str, RemoteRoute],
    env: Any,
    *,
    outgoing: Callable[[Any], Any] | None = None,
    incoming: Callable[[Any], Any] | None = None,
    hint: str = "declare it in wrangler.toml as a [[services]] binding",
) -> dict[str, Handler]:
    """A handler per route, over the service bindings of `env` (`env.<binding>`). `outgoing`
    converts the run before the call (the Cloudflare adapter passes `to_js`), `incoming` the
    value returned (`to_py`); `hint` ends the error for a binding `env` does not have."""
    handlers: dict[str, Handler] = {}
    for job, route in routes.items():
        binding = getattr(env, route.binding, None)
        if binding is None:
            raise RemoteHandlersError(
                f"{REMOTE_HANDLERS_VAR} routes job {job!r} to the service binding "
                f"{route.binding!r}, which this Worker does not have: {hint}"
            )
        if isinstance(binding, str | int | float | bool | Mapping):
            raise RemoteHandlersError(
                f"{REMOTE_HANDLERS_VAR} routes job {job!r} to {route.binding!r}, which is a "
                "variable, not a service binding"
            )
        handlers[job] = RemoteHandler(route, binding, outgoing=outgoing, incoming=incoming)
    return handlers


# --- The call ---------------------------------------------------------------------------------


def run_to_remote(run: JobRun, children: Sequence[JobRun] = ()) -> dict[str, Any]:
    """What the target's method receives: the run as the HTTP API answers it, with
    `children` (a flow parent's, as `ctx.children` has them; else empty)."""
    return {**run_to_wire(run), "children": [run_to_wire(child) for child in children]}


def remote_run(data: Mapping[str, Any]) -> JobRun:
    """In a Python target Worker: the run its method received, as a `JobRun` (times as aware
    datetimes). Plain dict access works as well; this is for typed code."""
    return run_from_wire(data)


def remote_children(data: Mapping[str, Any]) -> list[JobRun]:
    """In a Python target Worker: the `children` of the run its method received (a flow
    parent's, oldest first, each with its `result`), as `JobRun`s; empty for another run."""
    return [run_from_wire(child) for child in data.get("children") or ()]


def _error_text(exc: BaseException) -> str:
    # A JavaScript error (Pyodide's JsException, the local bindings' stand-in) has `message`;
    # its str() prefixes the error's name.
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message:
        return message
    return str(exc) or type(exc).__name__


_TRACEBACK_HEADER: Final = "Traceback (most recent call last):"
_EXCEPTION_LINE: Final = re.compile(r"([\w.<>]+)(?:: (.*))?\Z")


def _exception_line(text: str) -> str:
    """The line naming the error: after a Python traceback's last frame (the first line at
    column 0 after its last header; a message or notes may follow on more lines), or the
    first line of a plain message."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    headers = [i for i, line in enumerate(lines) if line.strip() == _TRACEBACK_HEADER]
    if not headers:
        return lines[0].strip()
    for line in lines[headers[-1] + 1 :]:
        if not line[:1].isspace():
            return line.strip()
    return lines[-1].strip()


def is_non_retryable(exc: BaseException) -> bool:
    """Whether a remote handler's error asks to fail the run at once: its message starts with
    `non_retryable:` (what any target, JavaScript included, can throw), or it is a Python
    `NonRetryableError` (kumofire_jobs' or the Workers SDK's), which Workers RPC delivers as
    a traceback whose exception line reads `<module>.NonRetryableError[: <message>]`."""
    if getattr(exc, "name", None) == _NON_RETRYABLE_TYPE:
        return True
    text = _error_text(exc).removeprefix(_PYTHON_ERROR_PREFIX).strip()
    if text.startswith((NON_RETRYABLE_PREFIX, _NON_RETRYABLE_TYPE)):
        return True
    line = _exception_line(text)
    if line.startswith(NON_RETRYABLE_PREFIX):
        return True
    match = _EXCEPTION_LINE.match(line)
    if match is None:
        return False
    head, message = match.group(1), match.group(2) or ""
    return head.rsplit(".", 1)[-1] == _NON_RETRYABLE_TYPE or message.startswith(
        NON_RETRYABLE_PREFIX
    )


def _summary(exc: BaseException) -> str:
    """The line that says what went wrong: a traceback's exception line, or the message."""
    line = _exception_line(_error_text(exc).removeprefix(_PYTHON_ERROR_PREFIX))
    return line or type(exc).__name__


class RemoteHandler:
    """The handler of one remote route: `await env.<binding>.<method>(run)`, whose answer is
    the handler's return value (the run's `result`)."""

    __slots__ = ("_incoming", "_outgoing", "binding", "route")

    def __init__(
        self,
        route: RemoteRoute,
        binding: Any,
        *,
        outgoing: Callable[[Any], Any] | None = None,
        incoming: Callable[[Any], Any] | None = None,
    ) -> None:
        self.route = route
        self.binding = binding
        self._outgoing = outgoing
        self._incoming = incoming

    async def __call__(self, ctx: JobContext) -> Any:
        argument = run_to_remote(ctx.job, ctx.children)
        if self._outgoing is not None:
            argument = self._outgoing(argument)
        try:
            answer = await getattr(self.binding, self.route.method)(argument)
        except Exception as exc:
            # The whole error (a remote traceback, say) goes to the log; the run's last_error
            # gets its last line, which names the error.
            ctx.log.warning("remote.failed", handler=str(self.route), error=_error_text(exc))
            summary = f"{self.route}: {_summary(exc)}"
            if is_non_retryable(exc):
                raise NonRetryableError(summary) from exc
            raise RemoteHandlerError(summary) from exc
        if self._incoming is not None:
            answer = self._incoming(answer)
        if is_carrying_answer(answer):  # log lines and progress, with the result or an error
            return await carry_back(answer, ctx, str(self.route))
        return answer

    def __repr__(self) -> str:
        return f"<remote handler {self.route.job!r} -> {self.route}>"
