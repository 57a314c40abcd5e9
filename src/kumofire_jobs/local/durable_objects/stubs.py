"""Ids and stubs: a Durable Object id, and the stub whose methods call the object by RPC."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kumofire_jobs.local import output_gate

from .clone import structured_clone

if TYPE_CHECKING:
    from kumofire_jobs.core.bindings import DurableObjectId

    from .namespace import LocalDurableObjectNamespace


class LocalDurableObjectId:
    """A Durable Object id: 64 hex digits; `name` is kept when it came from a name."""

    __slots__ = ("_hex", "_namespace", "name")

    def __init__(self, hex_id: str, name: str | None, namespace: str) -> None:
        self._hex = hex_id
        self.name = name
        self._namespace = namespace

    def toString(self) -> str:
        return self._hex

    def equals(self, other: object) -> bool:
        return self == other

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, LocalDurableObjectId)
            and other._hex == self._hex
            and other._namespace == self._namespace
        )

    def __hash__(self) -> int:
        return hash(self._hex)

    def __str__(self) -> str:
        return self._hex

    def __repr__(self) -> str:
        return f"LocalDurableObjectId({self._hex[:12]}…, name={self.name!r})"


class LocalDurableObjectStub:
    """`await stub.method(*args)` calls the object's public method by RPC."""

    def __init__(self, namespace: LocalDurableObjectNamespace, id: LocalDurableObjectId) -> None:
        self.id: DurableObjectId = id
        self.name = id.name
        self._local_id = id
        self._namespace = namespace

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        if method.startswith("_"):
            raise AttributeError(method)
        return _RpcMethod(self._namespace, self._local_id, method)

    def __repr__(self) -> str:
        return f"<stub {self._namespace.class_name} {self.id!r}>"


class _RpcMethod:
    __slots__ = ("_id", "_method", "_namespace")

    def __init__(
        self, namespace: LocalDurableObjectNamespace, id: LocalDurableObjectId, method: str
    ) -> None:
        self._namespace = namespace
        self._id = id
        self._method = method

    def __call__(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        if kwargs:
            raise TypeError(
                f"RPC method {self._method!r} takes positional arguments only "
                f"(got keyword arguments {sorted(kwargs)})"
            )
        args_clone = structured_clone(args)  # a list, as tuples arrive
        # Output from the calling object (if any) waits for its writes to be durable: for the
        # turn's group commit, shared with every other writer of the turn (committed now if
        # nothing else is ready to run), not a commit of its own.
        gate = output_gate.pending_gate()
        durable = None if gate is None else gate.durable()  # (asked now: before the commit)
        # Like the platform the call is sent now, not when awaited, so calls made in order are
        # delivered in order (a call held at the gate runs before any made after the commit);
        # awaiting the result only waits for the answer. The answer is its own future: a
        # caller that stops waiting does not cancel the call inside the object.
        return self._namespace._send(self._id, self._method, args_clone, durable)
