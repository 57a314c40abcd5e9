"""Service bindings to Workers run in-process: what `kumofire-jobs dev --service
BINDING=MODULE:CLASS` puts in the environment as `env.<BINDING>`.

The target is a `WorkerEntrypoint` class (any class built as `Class(ctx, env)`), loaded from
the user's module and instantiated for every call, as workerd builds an entrypoint per
request. Calls are Workers RPC as the platform makes them:

- positional arguments only, each a structured clone of plain data (dicts with string keys,
  lists, strings, numbers, booleans, None, bytes); anything else is refused when the call is
  made;
- the target receives dicts with attribute access (the Workers SDK's `JsDict`) and None for
  null, and its answer comes back to the caller the same way;
- the call is sent when it is made, and runs on its own: a caller that stops waiting does not
  stop it (it ends with the environment);
- an exception in the target reaches the caller as `ServiceBindingError`, a JavaScript
  `Error` whose message is the Python traceback (its last line `<module>.<Type>: <message>`):
  RPC carries the message, not the type;
- an exception the target returns (not raises) crosses as a JavaScript `Error` value, as the
  Workers SDK converts it (`Error(str(exc))`; a JavaScript error keeps its message and own
  properties), and reaches the caller as the SDK presents an `Error`: `ReceivedError`, an
  `Exception` whose text is the error's `toString()` (`"Error: <message>"`).

The target runs with an empty `env` of its own (no bindings, no vars): only the calling
service's bindings are emulated here.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import importlib.util
import inspect
import os
import re
import sys
import traceback
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from . import output_gate, workers_sdk
from .durable_objects import DataCloneError, structured_clone

__all__ = [
    "JsDict",
    "LocalExecutionContext",
    "LocalServiceBinding",
    "LocalWorkerEnv",
    "ReceivedError",
    "ServiceBindingError",
    "ServiceSpec",
    "ServiceSpecError",
    "as_received",
    "clone_for_rpc",
    "load_entrypoint",
    "parse_service_spec",
    "python_error_text",
]

_BINDING_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*\Z")
DEFAULT_ENTRYPOINT = "Default"


class ServiceSpecError(ValueError):
    """A `--service` argument that cannot be used: its shape, its module or its class."""


class ServiceBindingError(Exception):
    """A failed call over a service binding, as the platform raises it: a JavaScript error
    with `name` and `message` (for the target's own exception, its Python traceback)."""

    remote = True

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


class ReceivedError(Exception):
    """A JavaScript `Error` that a call answered (returned), as the Workers SDK presents it to
    the caller: an `Exception` whose text is the error's `toString()` (`"Error: <message>"`).
    What a raw JavaScript view would show is kept in `error_name`, `error_message` and
    `error_properties`."""

    def __init__(self, name: str, message: str, properties: dict[str, Any]) -> None:
        super().__init__(f"{name}: {message}")
        self.error_name = name
        self.error_message = message
        self.error_properties = properties


def received_error(exc: BaseException) -> ReceivedError:
    """An exception returned over RPC, as the caller receives it: a JavaScript error (one with
    `js_properties`, as the Cloudflare adapter's `error_value` makes off Pyodide) keeps its
    name, message and properties; any other exception becomes `Error(str(exc))`, as the SDK
    converts it."""
    properties = getattr(exc, "js_properties", None)
    if isinstance(properties, dict):
        name = getattr(exc, "name", "Error")
        message = getattr(exc, "message", str(exc))
        return ReceivedError(str(name), str(message), dict(properties))
    return ReceivedError("Error", str(exc), {})


class JsDict(dict[str, Any]):
    """A JavaScript object as the Workers SDK hands it to Python: a dict whose keys are also
    attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def as_received(value: Any) -> Any:
    """Cloned plain data as the receiving Python side sees it (the SDK's `python_from_rpc`)."""
    if isinstance(value, dict):
        return JsDict({key: as_received(item) for key, item in value.items()})
    if isinstance(value, list):
        return [as_received(item) for item in value]
    if isinstance(value, bytes):
        return memoryview(value)
    return value


def _buffers_as_bytes(value: Any) -> Any:
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, dict):
        return {key: _buffers_as_bytes(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_buffers_as_bytes(item) for item in value]
    return value


def clone_for_rpc(value: Any) -> Any:
    """A structured clone of `value`, refused as the platform refuses it (DataCloneError).
    A memoryview (what a received buffer is) crosses as bytes, as Pyodide sends a buffer."""
    try:
        return structured_clone(value)
    except DataCloneError:
        try:
            return structured_clone(_buffers_as_bytes(value))
        except DataCloneError as exc:
            raise ServiceBindingError("DataCloneError", str(exc)) from None


def python_error_text(exc: BaseException) -> str:
    """The message a caller reads for a Python entrypoint's exception: its traceback."""
    return "".join(traceback.format_exception(exc))


def _target_error(exc: BaseException) -> str:
    # The traceback starts in the target's code, not in this call's machinery.
    if exc.__traceback__ is not None and exc.__traceback__.tb_next is not None:
        exc = exc.with_traceback(exc.__traceback__.tb_next)
    return python_error_text(exc)


class LocalWorkerEnv:
    """The `env` of a Worker run in-process: it has no bindings or vars of its own."""

    def __init__(self, label: str) -> None:
        self._label = label

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"env.{name}: the Worker behind {self._label}, run in-process by kumofire-jobs "
            "dev, has no bindings or vars of its own"
        )


class LocalExecutionContext:
    """`ctx` of an invocation: `waitUntil(awaitable)` keeps work going after the answer."""

    def __init__(self, pending: set[asyncio.Task[Any]]) -> None:
        self._pending = pending
        self.props: dict[str, Any] = {}

    def waitUntil(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    wait_until = waitUntil

    def passThroughOnException(self) -> None:
        """Meaningful for `fetch` only; RPC calls have nothing to pass through to."""


class LocalServiceBinding:
    """`env.<BINDING>`: every public method of the target entrypoint is callable by RPC.
    `entrypoint(ctx, env)` builds the target for each call (its class, usually); `calls`
    counts the calls made."""

    def __init__(
        self, entrypoint: Callable[[Any, Any], Any], *, name: str, env: Any = None
    ) -> None:
        self.entrypoint = entrypoint
        self.name = name
        self.env = env if env is not None else LocalWorkerEnv(name)
        self.calls = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        if method.startswith("_"):
            raise AttributeError(method)
        if method in ("fetch", "connect"):
            raise AttributeError(
                f"{self.name}.{method}(): the in-process service bindings of kumofire-jobs dev "
                "carry RPC method calls only"
            )
        return lambda *args, **kwargs: self._send(method, args, kwargs)

    def _send(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Awaitable[Any]:
        if kwargs:
            raise TypeError(
                f"RPC method {method!r} takes positional arguments only "
                f"(got keyword arguments {sorted(kwargs)})"
            )
        arguments = clone_for_rpc(list(args))
        # Output from a calling Durable Object waits for its writes to be durable.
        output_gate.flush()
        self.calls += 1
        # Its own task in a fresh context: the target is another Worker, outside any caller's
        # output gate, and it runs on if the caller stops waiting (shield).
        task = asyncio.get_running_loop().create_task(
            self._invoke(method, arguments), context=contextvars.Context()
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return asyncio.shield(task)

    async def _invoke(self, method: str, arguments: list[Any]) -> Any:
        try:
            instance = self.entrypoint(LocalExecutionContext(self._tasks), self.env)
        except Exception as exc:
            raise ServiceBindingError("Error", _target_error(exc)) from None
        function = getattr(instance, method, None)
        if not callable(function) or method.startswith("_"):
            raise ServiceBindingError(
                "TypeError", f'The RPC receiver does not implement the method "{method}".'
            )
        try:
            result = function(*(as_received(argument) for argument in arguments))
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            raise ServiceBindingError("Error", _target_error(exc)) from None
        if isinstance(result, BaseException):
            return received_error(result)
        return as_received(clone_for_rpc(result))

    async def stop(self) -> None:
        """Cancel what still runs (calls nobody waits for, `waitUntil` work)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __repr__(self) -> str:
        return f"<service binding {self.name} -> {self.target} (in-process)>"

    @property
    def target(self) -> str:
        """The entrypoint's name, for messages."""
        return str(getattr(self.entrypoint, "__qualname__", self.entrypoint))


# --- --service BINDING=MODULE:CLASS -----------------------------------------------------------


class ServiceSpec:
    """One `--service` argument: the binding name, the module (a dotted name importable from
    the current directory, or a path to a .py file) and the class (None: the default)."""

    def __init__(self, binding: str, module: str, attribute: str | None) -> None:
        self.binding = binding
        self.module = module
        self.attribute = attribute

    def __repr__(self) -> str:
        target = self.module if self.attribute is None else f"{self.module}:{self.attribute}"
        return f"{self.binding}={target}"


def parse_service_spec(text: str) -> ServiceSpec:
    binding, sep, target = text.partition("=")
    binding = binding.strip()
    if not sep or not binding or not target.strip():
        raise ServiceSpecError(f"--service must look like BINDING=MODULE:CLASS, got {text!r}")
    if not _BINDING_NAME.match(binding):
        raise ServiceSpecError(f"--service {text!r}: {binding!r} is not a binding name")
    target = target.strip()
    # rpartition: a Windows path has a colon of its own.
    module, sep, attribute = target.rpartition(":")
    if not sep or not module or "/" in attribute or "\\" in attribute:
        return ServiceSpec(binding, target, None)
    if not attribute:
        raise ServiceSpecError(f"--service {text!r}: the class name after ':' is missing")
    return ServiceSpec(binding, module, attribute)


def _is_path(module: str) -> bool:
    return module.endswith(".py") or "/" in module or os.sep in module


def _import(spec: ServiceSpec) -> Any:
    workers_sdk.install()
    if _is_path(spec.module):
        path = Path(spec.module).resolve()
        if not path.is_file():
            raise ServiceSpecError(f"--service {spec!r}: no such file {path}")
        # Its directory is its import root, as the directory of `main` is on Workers.
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        name = f"kumofire_dev_service_{spec.binding.lower()}"
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ServiceSpecError(f"--service {spec!r}: cannot load {path}")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise ServiceSpecError(f"--service {spec!r}: importing {path} failed: {exc!r}") from exc
        return module
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(spec.module)
    except ImportError as exc:
        raise ServiceSpecError(
            f"--service {spec!r}: could not import {spec.module!r}: {exc}"
        ) from None
    except Exception as exc:  # it raised while importing (SyntaxError included)
        raise ServiceSpecError(
            f"--service {spec!r}: importing {spec.module!r} failed: {exc!r}"
        ) from exc


def load_entrypoint(spec: ServiceSpec, default: str | None = None) -> type[Any]:
    """The entrypoint class of `spec`; without a class name, `default` (the `entrypoint` of
    the binding's `[[services]]` table), else `Default`, as wrangler's own default."""
    attribute = spec.attribute or default or DEFAULT_ENTRYPOINT
    value: Any = _import(spec)
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ServiceSpecError(
                f"--service {spec!r}: {spec.module} has no class {attribute!r}"
            ) from None
    if not inspect.isclass(value):
        raise ServiceSpecError(
            f"--service {spec!r}: {attribute} is a {type(value).__name__}, not a class (a "
            "WorkerEntrypoint subclass)"
        )
    return value


def service_bindings(
    specs: list[ServiceSpec], entrypoints: Mapping[str, str] | None = None
) -> dict[str, LocalServiceBinding]:
    """A binding per `--service`, each class taken from `entrypoints` (binding name to the
    `entrypoint` of its `[[services]]` table) when the argument names none."""
    bindings: dict[str, LocalServiceBinding] = {}
    for spec in specs:
        if spec.binding in bindings:
            raise ServiceSpecError(f"--service {spec.binding} is given twice")
        entrypoint = load_entrypoint(spec, (entrypoints or {}).get(spec.binding))
        bindings[spec.binding] = LocalServiceBinding(entrypoint, name=spec.binding)
    return bindings
