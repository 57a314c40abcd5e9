"""The input gate: `ctx` (`blockConcurrencyWhile`, `waitUntil`) and waiting at the gate.

Calls to one object start one at a time, in order. Storage methods complete inside the event
loop without yielding, so while a call awaits storage no other call can start; when it
awaits anything else, other calls to the object may run. `blockConcurrencyWhile` holds the
gate shut until its callback completes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .errors import DurableObjectError
from .stubs import LocalDurableObjectId

if TYPE_CHECKING:
    from .actor import Actor
    from .namespace import LocalDurableObjectNamespace
    from .storage import LocalDurableObjectStorage


class LocalDurableObjectState:
    """`ctx` as the object's constructor receives it."""

    def __init__(
        self,
        namespace: LocalDurableObjectNamespace,
        actor: Actor,
        id: LocalDurableObjectId,
        storage: LocalDurableObjectStorage,
    ) -> None:
        self.id = id
        self.storage = storage
        self._namespace = namespace
        self._actor = actor

    def blockConcurrencyWhile(self, callback: Callable[[], Awaitable[Any]]) -> asyncio.Future[Any]:
        """Run `callback` with no other call to this object starting until it completes.

        Starts at once (so a constructor may call it without awaiting, as in JavaScript);
        await the returned task for its result. If the callback raises, the object is reset:
        the next call builds a fresh instance.
        """
        actor = self._actor
        self._namespace._hold(actor)
        actor.blockers += 1
        if actor.opened is None:
            actor.opened = asyncio.Event()
        actor.opened.clear()

        async def run() -> Any:
            try:
                return await callback()
            except Exception as exc:
                # The platform resets the object; the calls waiting at the gate fail.
                actor.resets += 1
                actor.reset_error = str(exc)
                if actor.instance is not None:
                    self._namespace._drop_instance(actor)
                raise

        def release(_: object) -> None:
            # A done callback, not `finally`: it also runs if the task is cancelled unstarted.
            actor.blockers -= 1
            if actor.blockers == 0 and actor.opened is not None:
                actor.opened.set()
            self._namespace._release(actor)

        task = asyncio.ensure_future(run())
        task.add_done_callback(release)
        return self._namespace._track(task, "blockConcurrencyWhile")

    def waitUntil(self, awaitable: Awaitable[Any]) -> None:
        """Keep `awaitable` running after the call returns (its errors are logged); the
        object is not evicted before it ends."""
        actor = self._actor
        self._namespace._hold(actor)
        task = asyncio.ensure_future(awaitable)
        task.add_done_callback(lambda _: self._namespace._release(actor))
        self._namespace._track(task, "waitUntil")


class InputGate:
    """The namespace's side of the gate: a call or alarm waits here for its instance.

    Part of `LocalDurableObjectNamespace` (which subclasses it); the method declared for type
    checking is the namespace's.
    """

    if TYPE_CHECKING:

        def _build(self, actor: Actor) -> None:
            """Build the object's instance (the namespace's factory)."""

    async def _enter(self, actor: Actor) -> Any:
        """Wait for the object's gate, building the instance if needed; return it."""
        while True:
            resets = actor.resets
            while actor.blockers:
                assert actor.opened is not None
                await actor.opened.wait()
            if actor.resets != resets:
                raise DurableObjectError(actor.reset_error)
            if actor.instance is None:
                self._build(actor)
            if not actor.blockers:  # the constructor may have called blockConcurrencyWhile
                return actor.instance
