"""Durable Objects: the namespace protocol over a Worker's binding, and `ctx.storage` as the
coordinator actor's `ActorStorage`.

RPC to an object takes positional arguments only and carries plain data (structured clones):
arguments are converted for JavaScript when the call is made (so calls made in order are sent
in order, as on the platform), results come back as plain Python, and a failure, whatever the
object raised, surfaces as `DurableObjectError` with its message.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ..core.bindings import DurableObjectId
from .errors import DurableObjectError, raise_platform
from .ffi import to_js, to_py


async def _resolve(result: Any) -> Any:
    try:
        value = await result if inspect.isawaitable(result) else result
    except Exception as exc:
        raise_platform(exc, DurableObjectError)
    return to_py(value)


class CloudflareDurableObjectNamespace:
    """A `DurableObjectNamespace` over `env.<binding>`. Ids are the platform's own objects,
    passed through; stubs are wrapped."""

    def __init__(self, binding: Any) -> None:
        self.binding = binding

    def idFromName(self, name: str) -> Any:
        return self._call("idFromName", name)

    def idFromString(self, id: str) -> Any:
        return self._call("idFromString", id)

    def newUniqueId(self, options: Mapping[str, Any] | None = None) -> Any:
        if options is None:
            return self._call("newUniqueId")
        return self._call("newUniqueId", to_js(dict(options)))

    def get(self, id: Any, options: Mapping[str, Any] | None = None) -> CloudflareDurableObjectStub:
        if options is None:
            return CloudflareDurableObjectStub(self._call("get", id))
        return CloudflareDurableObjectStub(self._call("get", id, to_js(dict(options))))

    def getByName(
        self, name: str, options: Mapping[str, Any] | None = None
    ) -> CloudflareDurableObjectStub:
        if options is None:
            return CloudflareDurableObjectStub(self._call("getByName", name))
        return CloudflareDurableObjectStub(self._call("getByName", name, to_js(dict(options))))

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self.binding, method)(*args)
        except Exception as exc:
            raise_platform(exc, DurableObjectError)


class CloudflareDurableObjectStub:
    """`await stub.method(*args)` calls the object's public method over Workers RPC."""

    __slots__ = ("handle", "id")

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.id: DurableObjectId = handle.id

    def __getattr__(self, method: str) -> _RpcMethod:
        if method.startswith("_"):
            raise AttributeError(method)  # not an RPC method: private, or Python's own probes
        return _RpcMethod(self.handle, method)

    def __repr__(self) -> str:
        return f"<Durable Object stub {self.handle!r}>"


class _RpcMethod:
    __slots__ = ("_handle", "_method")

    def __init__(self, handle: Any, method: str) -> None:
        self._handle = handle
        self._method = method

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError(
                f"RPC method {self._method!r} takes positional arguments only "
                f"(got keyword arguments {sorted(kwargs)})"
            )
        js_args = [to_js(arg) for arg in args]
        try:
            # Sent now, not when awaited: the platform's stubs start the call at once.
            result = getattr(self._handle, self._method)(*js_args)
        except Exception as exc:
            raise_platform(exc, DurableObjectError)
        return _resolve(result)


class CloudflareActorStorage:
    """`ctx.storage` of a Durable Object as the coordinator actor's `ActorStorage` (values
    converted both ways; alarm times are epoch milliseconds)."""

    __slots__ = ("storage",)

    def __init__(self, storage: Any) -> None:
        self.storage = storage

    async def get(self, key: str) -> Any:
        return await self._call("get", key)

    async def put(self, key: str, value: Any) -> None:
        await self._call("put", key, to_js(value))

    async def delete(self, key: str) -> bool:
        return bool(await self._call("delete", key))

    async def deleteAll(self) -> None:
        await self._call("deleteAll")

    async def list(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if options is None:
            result = await self._call("list")
        else:
            result = await self._call("list", to_js(dict(options)))
        return dict(result or {})

    async def getAlarm(self) -> float | None:
        value = await self._call("getAlarm")
        if value is None:
            return None
        get_time = getattr(value, "getTime", None)  # a Date, should one ever come back
        return float(get_time() if callable(get_time) else value)

    async def setAlarm(self, scheduled_time: float) -> None:
        await self._call("setAlarm", to_js(scheduled_time))

    async def deleteAlarm(self) -> None:
        await self._call("deleteAlarm")

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            result = getattr(self.storage, method)(*args)
        except Exception as exc:
            raise_platform(exc, DurableObjectError)
        return await _resolve(result)
