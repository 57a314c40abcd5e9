"""The coordinator actor's protocol, run in the embedded Durable Object binding (real storage,
alarms and input gate) with a recording delivery hook and the manual clock."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

import pytest

from kumofire_coordinator import (
    ArmReply,
    CancelReply,
    CloseReply,
    CoordinatorActor,
    CoordinatorConfig,
    CoordinatorEndpoint,
    Delivery,
    DeliveryAction,
    LeaseReply,
    ReleaseReply,
    RenewReply,
    StatusReply,
)
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.durable_objects import LocalDurableObjectNamespace

KEY = "run_1"
LEASE_MS = 30_000
CONFIG = CoordinatorConfig(redeliver_initial=10.0, redeliver_max=40.0, max_deliveries=4)


@dataclass
class Hook:
    """Records deliveries; `gate`, when set, holds a delivery until the test opens it."""

    clock: ManualClock
    deliveries: list[tuple[str, int, float]] = field(default_factory=list)
    action: Delivery = field(default_factory=lambda: Delivery(DeliveryAction.SENT))
    gate: asyncio.Event | None = None
    notes: list[str | None] = field(default_factory=list)  # each delivery's note
    fail: int = 0  # how many of the next deliveries raise (a failed queue send)
    entered: asyncio.Event = field(default_factory=asyncio.Event)  # set by each delivery
    fail_late: int = 0  # how many of the next deliveries raise after their gate opens

    async def deliver(self, key: str, delivery: int, note: str | None = None) -> Delivery:
        self.deliveries.append((key, delivery, self.clock.now()))
        self.notes.append(note)
        self.entered.set()
        if self.fail:
            self.fail -= 1
            raise RuntimeError("queue send failed")
        if self.gate is not None:
            await self.gate.wait()  # a queue send: other calls to the actor may run meanwhile
        if self.fail_late:
            self.fail_late -= 1
            raise RuntimeError("queue send failed")
        return self.action


@dataclass
class Env:
    hook: Hook


class CoordinatorUnderTest(CoordinatorEndpoint):
    def __init__(self, ctx: Any, env: Env) -> None:
        self.actor = CoordinatorActor(ctx.storage, env.hook.clock, env.hook, CONFIG)


@pytest.fixture
def hook(clock: ManualClock) -> Hook:
    return Hook(clock)


@pytest.fixture
async def namespace(
    clock: ManualClock, tmp_path: Path, hook: Hook
) -> AsyncIterator[LocalDurableObjectNamespace]:
    ns = LocalDurableObjectNamespace(
        CoordinatorUnderTest, path=tmp_path / "do", clock=clock, env=Env(hook)
    )
    await ns.start()
    yield ns
    await ns.close()


def now_ms(clock: ManualClock) -> int:
    return int(clock.now() * 1000)


async def test_arm_delivers_at_the_due_time_and_not_before(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    start = clock.now()
    await stub.arm(KEY, now_ms(clock) + 5_000)
    await clock.advance(4.999)
    assert hook.deliveries == []
    await clock.advance(0.001)
    assert hook.deliveries == [(KEY, 1, start + 5)]
    assert (await stub.status())["phase"] == "delivered"


async def test_a_due_time_in_the_past_delivers_at_once(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    await namespace.getByName(KEY).arm(KEY, now_ms(clock) - 60_000)
    await clock.advance(0)
    assert [d[1] for d in hook.deliveries] == [1]


async def test_two_consumers_racing_for_one_lease_exactly_one_wins(
    namespace: LocalDurableObjectNamespace, clock: ManualClock
) -> None:
    stub = namespace.getByName(KEY)
    await stub.arm(KEY, now_ms(clock))
    await clock.advance(0)
    results = await asyncio.gather(*(stub.lease(KEY, LEASE_MS) for _ in range(5)))
    granted = [r for r in results if r["granted"]]
    assert len(granted) == 1
    assert {r["reason"] for r in results if not r["granted"]} == {"held"}


async def test_expire_lease_ends_only_a_live_lease_granted_before_the_time(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    assert await stub.expire_lease(now_ms(clock)) == {"expired": False}  # closed
    await stub.arm(KEY, now_ms(clock))
    await clock.advance(0)
    grant = await stub.lease(KEY, LEASE_MS)
    assert grant["granted"]
    # Granted at (not before) that time: a lease of the process now starting is spared.
    assert await stub.expire_lease(grant["token"]) == {"expired": False}
    await clock.advance(1)
    started = now_ms(clock)
    assert await stub.expire_lease(started) == {"expired": True}
    await clock.advance(0)  # the alarm fires now, not when the lease would have run out
    assert [d[2] for d in hook.deliveries] == [started / 1000 - 1, started / 1000]
    assert (await stub.renew(grant["token"], LEASE_MS))["ok"] is False
    again = await stub.lease(KEY, LEASE_MS)
    assert again["granted"] and again["token"] > grant["token"]
    assert await stub.expire_lease(started) == {"expired": False}  # granted since
    assert (await stub.release(again["token"]))["closed"]


async def test_a_lease_before_the_due_time_is_refused(
    namespace: LocalDurableObjectNamespace, clock: ManualClock
) -> None:
    stub = namespace.getByName(KEY)
    due = now_ms(clock) + 1_000
    await stub.arm(KEY, due)
    assert await stub.lease(KEY, LEASE_MS) == {"granted": False, "reason": "not_due", "due_ms": due}
    await clock.advance(1)
    assert (await stub.lease(KEY, LEASE_MS))["granted"]


async def test_an_early_lease_takes_a_parked_key_before_its_due_time_but_not_a_held_one(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    await stub.arm(KEY, now_ms(clock) + 300_000)  # parked, as a run waiting for a slot
    grant = await stub.lease(KEY, LEASE_MS, True)
    assert grant["granted"]
    assert await stub.lease(KEY, LEASE_MS, True) == {"granted": False, "reason": "held"}
    await clock.advance(LEASE_MS / 1000)  # its holder died: the key is due, delivered again
    assert [d[0] for d in hook.deliveries] == [KEY]
    grant = await stub.lease(KEY, LEASE_MS)
    assert grant["granted"]
    assert (await stub.release(grant["token"]))["closed"]
    assert await stub.lease(KEY, LEASE_MS, True) == {"granted": False, "reason": "closed"}
    await clock.advance(301)
    assert len(hook.deliveries) == 1  # the parked alarm went with the close


async def test_a_lease_for_an_unknown_key_is_refused(
    namespace: LocalDurableObjectNamespace,
) -> None:
    result = await namespace.getByName(KEY).lease(KEY, LEASE_MS)
    assert result == {"granted": False, "reason": "closed"}


async def test_lease_expiry_leads_to_redelivery_and_a_new_token(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    await stub.arm(KEY, now_ms(clock))
    await clock.advance(0)
    first = await stub.lease(KEY, LEASE_MS)
    await clock.advance(29.999)
    assert len(hook.deliveries) == 1  # the holder still has its lease
    assert not (await stub.lease(KEY, LEASE_MS))["granted"]
    await clock.advance(0.001)  # expired, never renewed: the holder died
    assert len(hook.deliveries) == 2
    second = await stub.lease(KEY, LEASE_MS)
    assert second["granted"] and second["token"] > first["token"]
    assert await stub.renew(first["token"], LEASE_MS) == {"ok": False, "reason": "lost"}


async def test_renewal_keeps_the_lease_alive(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    await stub.arm(KEY, now_ms(clock))
    await clock.advance(0)
    lease = await stub.lease(KEY, LEASE_MS)
    for _ in range(10):
        await clock.advance(20)
        assert (await stub.renew(lease["token"], LEASE_MS))["ok"]
    assert len(hook.deliveries) == 1
    assert (await stub.status())["lease_live"]


async def test_a_stale_token_cannot_release(
    namespace: LocalDurableObjectNamespace, clock: ManualClock
) -> None:
    stub = namespace.getByName(KEY)
    await stub.arm(KEY, now_ms(clock))
    await clock.advance(0)
    stale = await stub.lease(KEY, LEASE_MS)
    await clock.advance(30)
    fresh = await stub.lease(KEY, LEASE_MS)
    assert await stub.release(stale["token"], None) == {"ok": False, "reason": "lost"}
    assert (await stub.status())["lease_live"]
    assert await stub.release(fresh["token"], None) == {"ok": True, "closed": True}


async def test_release_with_rearm_delivers_again_at_that_time(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    await stub.arm(KEY, now_ms(clock))
    await clock.advance(0)
    lease = await stub.lease(KEY, LEASE_MS)
    rearm = now_ms(clock) + 2_000
    assert await stub.release(lease["token"], rearm) == {"ok": True, "closed": False}
    assert not (await stub.lease(KEY, LEASE_MS))["granted"]  # not due again yet
    await clock.advance(2)
    assert [d[1] for d in hook.deliveries] == [1, 1]  # a fresh delivery count after a re-arm


async def test_release_without_rearm_closes_the_actor(
    namespace: LocalDurableObjectNamespace, clock: ManualClock
) -> None:
    stub = namespace.getByName(KEY)
    await stub.arm(KEY, now_ms(clock))
    await clock.advance(0)
    lease = await stub.lease(KEY, LEASE_MS)
    await stub.release(lease["token"], None)
    assert await stub.status() == {"phase": "closed", "lease_live": False}
    assert namespace.alarm_of(KEY) is None


async def test_cancel_during_a_lease_tells_the_holder_and_closes_on_release(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    await stub.arm(KEY, now_ms(clock))
    await clock.advance(0)
    lease = await stub.lease(KEY, LEASE_MS)
    assert await stub.cancel() == {"canceled": True, "leased": True}
    assert await stub.renew(lease["token"], LEASE_MS) == {"ok": False, "reason": "canceled"}
    assert (await stub.lease(KEY, LEASE_MS))["reason"] == "canceled"
    await stub.release(lease["token"], now_ms(clock) + 1000)  # a retry asked for: canceled wins
    assert (await stub.status())["phase"] == "closed"
    await clock.advance(3600)
    assert len(hook.deliveries) == 1


async def test_cancel_when_the_holder_died_closes_at_expiry(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    await stub.arm(KEY, now_ms(clock))
    await clock.advance(0)
    await stub.lease(KEY, LEASE_MS)
    await stub.cancel()
    await clock.advance(30)
    assert (await stub.status())["phase"] == "closed"
    assert len(hook.deliveries) == 1


async def test_cancel_without_a_lease_closes_at_once(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    await stub.arm(KEY, now_ms(clock) + 5_000)
    assert await stub.cancel() == {"canceled": True, "leased": False}
    await clock.advance(60)
    assert hook.deliveries == []
    assert namespace.alarm_of(KEY) is None


async def test_close_stops_everything_and_clears_storage(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    await stub.arm(KEY, now_ms(clock) + 5_000)
    assert await stub.close() == {"closed": True}
    assert namespace.alarm_of(KEY) is None
    await clock.advance(600)
    assert hook.deliveries == []
    assert await stub.status() == {"phase": "closed", "lease_live": False}


async def test_redelivery_when_the_message_is_lost_then_giving_up(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    start = clock.now()
    await stub.arm(KEY, now_ms(clock))
    await clock.advance(3600)  # nobody ever takes the lease
    # Backoff 10 s, 20 s, 40 s (capped at 40 s); four deliveries, then it gives up.
    assert [(d[1], d[2] - start) for d in hook.deliveries] == [(1, 0), (2, 10), (3, 30), (4, 70)]
    status = await stub.status()
    assert status["phase"] == "abandoned" and status["deliveries"] == 4
    assert namespace.alarm_of(KEY) is None
    assert (await stub.lease(KEY, LEASE_MS))["granted"]  # a late message can still take it


async def test_a_hook_saying_close_or_defer(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    later = now_ms(clock) + 7_000
    hook.action = Delivery(DeliveryAction.DEFER, due_ms=later)
    await stub.arm(KEY, now_ms(clock))
    await clock.advance(0)
    assert (await stub.status())["phase"] == "armed"
    assert namespace.alarm_of(KEY) == later
    hook.action = Delivery(DeliveryAction.CLOSE)
    await clock.advance(7)
    assert (await stub.status())["phase"] == "closed"
    assert len(hook.deliveries) == 2


async def test_an_alarm_and_a_lease_interleaving_lose_no_update(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    hook.gate = asyncio.Event()  # the delivery's send is slow
    await stub.arm(KEY, now_ms(clock))
    await clock.advance(0)
    assert len(hook.deliveries) == 1  # the alarm is awaiting its send
    # A consumer got an earlier message and takes the lease while the alarm awaits.
    lease = await stub.lease(KEY, LEASE_MS)
    assert lease["granted"]
    hook.gate.set()
    await clock.advance(0)  # the alarm resumes: its compare-and-set sees the lease and yields
    status = await stub.status()
    assert status["phase"] == "leased" and status["lease_live"]
    assert namespace.alarm_of(KEY) == lease["expires_ms"]
    assert (await stub.renew(lease["token"], LEASE_MS))["ok"]


async def test_a_vacant_lease_granted_after_a_close_during_an_alarms_send_stands(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    """While the alarm awaits its send, a consumer takes the lease and releases it (the
    object closes), and another's vacant lease stores a state afresh: its version counts
    from the start again, so it may equal the one the alarm read. The alarm's
    compare-and-set must still see it changed: recording its delivery over it would drop
    the live lease (no expiry, a redelivery alarm), and the next lease would go to a
    second holder while the first runs."""
    stub = namespace.getByName(KEY)
    hook.gate = asyncio.Event()
    await stub.arm(KEY, now_ms(clock))
    await clock.advance(0)
    assert len(hook.deliveries) == 1  # the alarm awaits its send
    first = await stub.lease(KEY, LEASE_MS)
    assert (await stub.release(first["token"])) == {"ok": True, "closed": True}
    vacant = await stub.lease(KEY, LEASE_MS, False, True)
    assert vacant["granted"]
    hook.gate.set()
    await clock.advance(0)  # the alarm resumes
    status = await stub.status()
    assert status["phase"] == "leased" and status["lease_live"]
    assert namespace.alarm_of(KEY) == vacant["expires_ms"]
    assert await stub.lease(KEY, LEASE_MS, False, True) == {"granted": False, "reason": "held"}
    assert (await stub.renew(vacant["token"], LEASE_MS))["ok"]


# --- an arm with `inline` for a key already due delivers it ---------------------------------


async def test_an_arm_already_due_delivers_inline_with_its_note_and_stores_nothing(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    """A new key (nothing stored) due at its arm: delivered before the reply, with the note,
    and nothing written: no state, no alarm (the queue holds the message; a lost one is the
    jobs layer's reconciliation's, tests/test_due_at_create.py)."""
    stub = namespace.getByName(KEY)
    start = clock.now()
    assert await stub.arm(KEY, now_ms(clock) - 5_000, "queued", True) == {"armed": True}
    assert hook.deliveries == [(KEY, 1, start)] and hook.notes == ["queued"]
    assert namespace.alarm_of(KEY) is None
    assert (await stub.status())["phase"] == "closed"
    await clock.advance(600)
    assert len(hook.deliveries) == 1  # no alarm: no redelivery of its own


async def test_a_vacant_lease_is_granted_on_an_object_holding_nothing(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    """The consumer of an inline delivery asks with `vacant`: granted, and the lease stores
    the state with its own alarm, which delivers again if the holder dies. Without
    `vacant`, or early (a limiter's hand-over), an empty object is closed."""
    stub = namespace.getByName(KEY)
    await stub.arm(KEY, now_ms(clock), "n", True)
    assert await stub.lease(KEY, LEASE_MS) == {"granted": False, "reason": "closed"}
    assert await stub.lease(KEY, LEASE_MS, True, True) == {"granted": False, "reason": "closed"}
    grant = await stub.lease(KEY, LEASE_MS, False, True)
    assert grant["granted"] and grant["token"] == now_ms(clock)
    assert (await stub.lease(KEY, LEASE_MS, False, True)) == {"granted": False, "reason": "held"}
    assert namespace.alarm_of(KEY) == grant["expires_ms"]
    namespace.evict(KEY)  # the lease is durable: a new instance does not grant another
    assert (await stub.lease(KEY, LEASE_MS, False, True)) == {"granted": False, "reason": "held"}
    await clock.advance(LEASE_MS / 1000)  # the holder died: its alarm delivers again
    assert [d[1] for d in hook.deliveries] == [1, 1] and hook.notes == ["n", None]
    again = await stub.lease(KEY, LEASE_MS, False, True)
    assert again["granted"] and again["token"] > grant["token"]
    assert await stub.release(again["token"]) == {"ok": True, "closed": True}
    assert namespace.alarm_of(KEY) is None and (await stub.status())["phase"] == "closed"


async def test_an_unstored_inline_delivery_deferred_stores_the_state_for_then(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    """A hook that parks the key (a limited run told to wait) defers it: only then is the
    state stored, armed for the fallback time, without the note."""
    stub = namespace.getByName(KEY)
    hook.action = Delivery(DeliveryAction.DEFER, due_ms=now_ms(clock) + 5_000)
    assert await stub.arm(KEY, now_ms(clock), "n", True) == {"armed": True}
    assert namespace.alarm_of(KEY) == now_ms(clock) + 5_000
    assert (await stub.status())["phase"] == "armed"
    hook.action = Delivery(DeliveryAction.SENT)
    await clock.advance(5)
    assert [d[1] for d in hook.deliveries] == [1, 1] and hook.notes == ["n", None]


async def test_an_early_lease_during_an_unstored_inline_delivery_is_granted(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    """A limited run's inline delivery puts it in its limiter's line, and a slot freed
    before the hook's answer reaches the actor hands it over at once: the limiter's early
    lease must be granted then, as on an object whose state is stored (a `closed` answer
    would drop the run from the line until its fallback). The deferral that follows does
    not displace the lease."""
    stub = namespace.getByName(KEY)
    hook.gate = asyncio.Event()
    hook.action = Delivery(DeliveryAction.DEFER, due_ms=now_ms(clock) + 300_000)
    arming = asyncio.ensure_future(stub.arm(KEY, now_ms(clock), "placement", True))
    await hook.entered.wait()  # placed in line; the hook's answer is not back yet
    grant = await stub.lease(KEY, LEASE_MS, True)
    assert grant["granted"]
    hook.gate.set()
    assert await arming == {"armed": True}
    status = await stub.status()
    assert status["phase"] == "leased" and status["lease_live"]
    assert namespace.alarm_of(KEY) == grant["expires_ms"]
    assert await stub.release(grant["token"]) == {"ok": True, "closed": True}
    assert namespace.alarm_of(KEY) is None
    # Once the arm has answered, an empty object is closed to an early lease again.
    assert await stub.lease(KEY, LEASE_MS, True) == {"granted": False, "reason": "closed"}


async def test_a_failed_unstored_inline_send_does_not_overwrite_a_lease_or_cancel_meanwhile(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    """The send failed after another call changed the object (a duplicate's lease, a
    cancel): that call's state stands; the failure stores no retry over it."""
    for other in ("lease", "cancel"):
        key = f"{KEY}_{other}"
        stub = namespace.getByName(key)
        hook.gate, hook.fail_late = asyncio.Event(), 1
        hook.entered.clear()
        arming = asyncio.ensure_future(stub.arm(key, now_ms(clock), "n", True))
        await hook.entered.wait()  # the send is awaited
        if other == "lease":
            lease = await stub.lease(key, LEASE_MS, False, True)
            assert lease["granted"]
        else:
            assert await stub.cancel() == {"canceled": True, "leased": False}
        hook.gate.set()
        assert await arming == {"armed": True, "delivery_error": "queue send failed"}
        status = await stub.status()
        if other == "lease":
            assert status["phase"] == "leased" and status["lease_live"]
            assert namespace.alarm_of(key) == lease["expires_ms"]
        else:
            assert status["phase"] == "closed" and namespace.alarm_of(key) is None


async def test_an_arm_already_due_without_inline_leaves_the_delivery_to_its_alarm(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    """Callers that must not wait for a delivery (a limiter's wake, a resume arming many,
    reconciliation) arm without `inline`: the reply comes first, then the alarm delivers."""
    stub = namespace.getByName(KEY)
    hook.gate = asyncio.Event()  # the alarm's send waits: the arm's reply does not
    assert await stub.arm(KEY, now_ms(clock), "n") == {"armed": True}
    await clock.advance(0)
    assert [d[1] for d in hook.deliveries] == [1] and hook.notes == ["n"]
    hook.gate.set()
    await clock.advance(0)
    assert namespace.alarm_of(KEY) == now_ms(clock) + 10_000  # the redelivery alarm


async def test_a_note_goes_only_with_the_first_delivery_after_its_arm(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    await stub.arm(KEY, now_ms(clock) + 1_000, "n")  # a delayed key: its alarm delivers
    await clock.advance(1)
    lease = await stub.lease(KEY, LEASE_MS)
    await clock.advance(LEASE_MS / 1000)  # the holder died: delivered again, no note
    await stub.release((await stub.lease(KEY, LEASE_MS))["token"], now_ms(clock) + 1_000)
    await clock.advance(1)  # a retry's delivery: no note either
    await stub.arm(KEY, now_ms(clock))  # armed again without one
    assert lease["granted"]
    assert [d[1] for d in hook.deliveries] == [1, 1, 1, 1]
    assert hook.notes == ["n", None, None, None]


async def test_a_failed_inline_delivery_is_tried_again_by_the_alarm(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    hook.fail = 1
    reply = await stub.arm(KEY, now_ms(clock), "n", True)
    assert reply == {"armed": True, "delivery_error": "queue send failed"}
    assert namespace.alarm_of(KEY) == now_ms(clock) + 2_000  # as the platform retries an alarm
    await clock.advance(2)
    # Still the first delivery after the arm: the note goes with it.
    assert [d[1] for d in hook.deliveries] == [1, 1] and hook.notes == ["n", "n"]
    assert namespace.alarm_of(KEY) == now_ms(clock) + 10_000
    assert (await stub.lease(KEY, LEASE_MS))["granted"]


async def test_an_object_dying_during_an_unstored_inline_delivery_leaves_nothing_behind(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    """Nothing is stored before the send: an arm cut off there (the object died, the
    caller's call with it) leaves no state and no alarm. The message went out or it did
    not; either way the jobs layer's reconciliation finds the unfinished run overdue with
    its actor closed and arms it again (tests/test_due_at_create.py)."""
    stub = namespace.getByName(KEY)
    hook.gate = asyncio.Event()  # the send never completes
    arming = asyncio.ensure_future(stub.arm(KEY, now_ms(clock), "n", True))
    await hook.entered.wait()  # the delivery awaits its send
    arming.cancel()
    with pytest.raises(asyncio.CancelledError):
        await arming
    namespace.evict(KEY)
    hook.gate = None
    assert namespace.alarm_of(KEY) is None and (await stub.status())["phase"] == "closed"
    await stub.arm(KEY, now_ms(clock))  # reconciliation's arm: stored, its alarm delivers
    await clock.advance(0)
    assert [d[1] for d in hook.deliveries] == [1, 1] and hook.notes == ["n", None]


async def test_an_object_dying_between_a_stored_inline_arm_and_its_delivery_delivers_on_its_alarm(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    """An inline arm of an object that already holds a state (armed for later, say) stores
    the state and the fallback alarm before the delivery starts: an arm cut off there
    leaves the alarm to deliver."""
    stub = namespace.getByName(KEY)
    await stub.arm(KEY, now_ms(clock) + 60_000)  # a state stored already
    hook.gate = asyncio.Event()  # the send never completes
    arming = asyncio.ensure_future(stub.arm(KEY, now_ms(clock), "n", True))
    await hook.entered.wait()  # the delivery awaits its send
    arming.cancel()
    with pytest.raises(asyncio.CancelledError):
        await arming
    namespace.evict(KEY)  # the instance is gone; its storage and alarm are not
    hook.gate = None
    await clock.advance(9.999)
    assert len(hook.deliveries) == 1
    await clock.advance(0.001)
    # Counted as a redelivery (the hook looks for itself: no note).
    assert [d[1] for d in hook.deliveries] == [1, 2] and hook.notes == ["n", None]
    assert (await stub.lease(KEY, LEASE_MS))["granted"]


async def test_a_lease_taken_during_an_inline_delivery_stands(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    hook.gate = asyncio.Event()  # the send is slow
    arming = asyncio.ensure_future(stub.arm(KEY, now_ms(clock), None, True))
    await hook.entered.wait()  # the delivery awaits its send
    lease = await stub.lease(KEY, LEASE_MS, False, True)  # its consumer beat the reply
    assert lease["granted"]
    hook.gate.set()
    assert await arming == {"armed": True}
    status = await stub.status()
    assert status["phase"] == "leased" and status["lease_live"]
    assert namespace.alarm_of(KEY) == lease["expires_ms"]  # the lease's own alarm
    await clock.advance(10)
    assert len(hook.deliveries) == 1
    assert (await stub.release(lease["token"])) == {"ok": True, "closed": True}


async def test_a_cancel_during_an_inline_delivery_stands(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    hook.gate = asyncio.Event()
    arming = asyncio.ensure_future(stub.arm(KEY, now_ms(clock), None, True))
    await hook.entered.wait()  # the delivery awaits its send
    assert await stub.cancel() == {"canceled": True, "leased": False}
    hook.gate.set()
    assert await arming == {"armed": True}
    assert (await stub.status())["phase"] == "closed"
    assert namespace.alarm_of(KEY) is None
    await clock.advance(600)
    assert len(hook.deliveries) == 1
    assert await stub.lease(KEY, LEASE_MS) == {"granted": False, "reason": "closed"}


async def test_an_arm_while_leased_does_not_deliver_inline(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    await stub.arm(KEY, now_ms(clock), None, True)
    lease = await stub.lease(KEY, LEASE_MS, False, True)
    assert await stub.arm(KEY, now_ms(clock), "n", True) == {"armed": False, "reason": "leased"}
    assert len(hook.deliveries) == 1
    await stub.release(lease["token"])  # the due time armed meanwhile applies: delivered
    await clock.advance(0)
    assert [d[1] for d in hook.deliveries] == [1, 1] and hook.notes == [None, None]


async def test_state_survives_eviction(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    await stub.arm(KEY, now_ms(clock))
    await clock.advance(0)
    lease = await stub.lease(KEY, LEASE_MS)
    namespace.evict(KEY)
    assert (await namespace.getByName(KEY).renew(lease["token"], LEASE_MS))["ok"]
    assert not (await namespace.getByName(KEY).lease(KEY, LEASE_MS))["granted"]


async def test_arm_while_leased_waits_for_the_release(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    await stub.arm(KEY, now_ms(clock))
    await clock.advance(0)
    lease = await stub.lease(KEY, LEASE_MS)
    await stub.cancel()
    # The run is retried by hand while the canceled attempt still runs: arm again.
    assert await stub.arm(KEY, now_ms(clock)) == {"armed": False, "reason": "leased"}
    assert (await stub.renew(lease["token"], LEASE_MS))["ok"]  # no longer canceled
    await stub.release(lease["token"], None)  # the old attempt ends: the new due time stands
    await clock.advance(0)
    assert len(hook.deliveries) == 2
    assert (await stub.lease(KEY, LEASE_MS))["granted"]


def test_state_round_trips_through_storage_with_every_field() -> None:
    from dataclasses import fields

    from kumofire_coordinator import ActorState, Phase

    state = ActorState(
        key="k", due=5, phase=Phase.LEASED, version=3, deliveries=2, token=9,
        lease_expires=7, canceled=True, pending_due=11, note="n",
    )  # fmt: skip
    stored = state.to_storage()
    assert set(stored) == {f.name for f in fields(ActorState)}
    assert ActorState.from_storage(stored) == state


# --- storage rows written (each put, delete and alarm change is a billed row) -------------------


class CountingStorage:
    """The object's real storage, counting the calls that write a row."""

    writes: ClassVar[list[str]] = []

    def __init__(self, storage: Any) -> None:
        self._storage = storage

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._storage, name)
        if name in ("put", "delete", "deleteAll", "setAlarm", "deleteAlarm"):

            async def counted(*args: Any) -> Any:
                CountingStorage.writes.append(name)
                return await method(*args)

            return counted
        return method


class CountingCoordinator(CoordinatorEndpoint):
    def __init__(self, ctx: Any, env: Env) -> None:
        self.actor = CoordinatorActor(
            CountingStorage(ctx.storage), env.hook.clock, env.hook, CONFIG
        )


@pytest.fixture
async def counting(
    clock: ManualClock, tmp_path: Path, hook: Hook
) -> AsyncIterator[LocalDurableObjectNamespace]:
    CountingStorage.writes = []
    ns = LocalDurableObjectNamespace(
        CountingCoordinator, path=tmp_path / "counted", clock=clock, env=Env(hook)
    )
    await ns.start()
    yield ns
    await ns.close()


async def test_a_run_costs_five_storage_rows(
    counting: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = counting.getByName(KEY)
    await stub.arm(KEY, now_ms(clock))  # due now: the alarm runs at once
    await clock.advance(0)
    assert [d[1] for d in hook.deliveries] == [1]
    # arm: the state and the alarm; the first delivery: only its redelivery alarm
    assert CountingStorage.writes == ["put", "setAlarm", "setAlarm"]
    assert (await stub.status())["phase"] == "delivered"
    grant = await stub.lease(KEY, LEASE_MS)  # the redelivery alarm comes first: it serves
    assert CountingStorage.writes[3:] == ["put"]
    await stub.release(grant["token"])
    assert CountingStorage.writes[4:] == ["deleteAll"]
    assert counting.alarm_of(KEY) is None


async def test_a_run_due_at_its_arm_costs_three_storage_rows(
    counting: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = counting.getByName(KEY)
    assert await stub.arm(KEY, now_ms(clock), None, True) == {"armed": True}  # inline
    assert [d[1] for d in hook.deliveries] == [1]
    assert CountingStorage.writes == []  # the delivery went out: nothing stored
    grant = await stub.lease(KEY, LEASE_MS, False, True)
    # the lease: its state and its alarm (the stall's: the holder may die)
    assert CountingStorage.writes == ["put", "setAlarm"]
    assert counting.alarm_of(KEY) == grant["expires_ms"]
    await stub.release(grant["token"])
    assert CountingStorage.writes[2:] == ["deleteAll"]


async def test_a_lease_outliving_the_redelivery_alarm_is_kept_not_redelivered(
    counting: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = counting.getByName(KEY)
    await stub.arm(KEY, now_ms(clock))
    await clock.advance(0)
    grant = await stub.lease(KEY, LEASE_MS)
    await clock.advance(CONFIG.redeliver_initial + 1)  # the earlier alarm re-aims at expiry
    assert len(hook.deliveries) == 1
    assert counting.alarm_of(KEY) == grant["expires_ms"]
    await clock.advance(grant["expires_ms"] / 1000 - clock.now())  # the holder never returned
    assert [d[1] for d in hook.deliveries] == [1, 1]  # delivered again, counting anew


async def test_a_lease_shorter_than_the_redelivery_delay_sets_its_own_alarm(
    counting: LocalDurableObjectNamespace, clock: ManualClock
) -> None:
    stub = counting.getByName(KEY)
    await stub.arm(KEY, now_ms(clock))
    await clock.advance(0)
    grant = await stub.lease(KEY, 2_000)
    assert CountingStorage.writes[3:] == ["put", "setAlarm"]
    assert counting.alarm_of(KEY) == grant["expires_ms"]


async def test_a_redelivery_is_counted_although_the_first_delivery_wrote_no_state(
    counting: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = counting.getByName(KEY)
    await stub.arm(KEY, now_ms(clock) - 3_600_000)  # a past due time counts from now
    await clock.advance(CONFIG.redeliver_initial + 20 + 40 + 40)
    assert [d[1] for d in hook.deliveries] == [1, 2, 3, 4]
    assert (await stub.status())["phase"] == "abandoned"


async def test_a_failing_delivery_is_recorded_and_redelivered_until_giving_up(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    """A send that keeps failing must not outlast the platform's few alarm retries: each
    failure is counted and aims at the next redelivery, so the actor ends `abandoned` (which
    reconciliation picks up) instead of `armed` with no alarm."""

    class Outage(Exception):
        pass

    async def failing(key: str, delivery: int, note: str | None = None) -> Delivery:
        hook.deliveries.append((key, delivery, clock.now()))
        raise Outage("queue down")

    hook.deliver = failing  # type: ignore[method-assign]
    stub = namespace.getByName(KEY)
    await stub.arm(KEY, now_ms(clock))
    await clock.advance(0)
    assert (await stub.status())["phase"] == "delivered"
    assert namespace.alarm_of(KEY) == now_ms(clock) + 10_000
    await clock.advance(10 + 20 + 40 + 40)  # the fourth failure's alarm finds it out of tries
    assert [d[1] for d in hook.deliveries] == [1, 2, 3, 4]
    status = await stub.status()
    assert status["phase"] == "abandoned" and status["deliveries"] == 4


# --- the replies' shapes ----------------------------------------------------------------------


def _matches(value: object, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin is Literal:
        return any(type(value) is type(arg) and value == arg for arg in get_args(hint))
    if origin is Union or origin is types.UnionType:
        return any(_matches(value, arg) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is int:
        return type(value) is int
    return isinstance(value, hint)


def conforms(reply: Mapping[str, object], declared: Any) -> str | None:
    """The name of the member of `declared` (a TypedDict or a union of them) that `reply`
    is, or None."""
    for member in get_args(declared) or (declared,):
        hints = get_type_hints(member)
        if set(reply) == set(hints) and all(_matches(reply[k], t) for k, t in hints.items()):
            return str(member.__name__)
    return None


async def test_every_reply_is_one_the_messages_declare(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, hook: Hook
) -> None:
    stub = namespace.getByName(KEY)
    seen: list[str | None] = []

    async def call(declared: Any, method: str, *args: object) -> Any:
        reply = await getattr(stub, method)(*args)
        seen.append(conforms(reply, declared))
        return reply

    await call(StatusReply, "status")  # closed
    await call(LeaseReply, "lease", KEY, LEASE_MS)  # closed
    await call(ArmReply, "arm", KEY, now_ms(clock) + 1_000)  # armed
    await call(LeaseReply, "lease", KEY, LEASE_MS)  # not due
    await clock.advance(1)
    await call(StatusReply, "status")  # delivered
    token = (await call(LeaseReply, "lease", KEY, LEASE_MS))["token"]  # granted
    await call(LeaseReply, "lease", KEY, LEASE_MS)  # held
    await call(ArmReply, "arm", KEY, now_ms(clock))  # deferred: leased
    await call(RenewReply, "renew", token, LEASE_MS)  # renewed
    await call(ReleaseReply, "release", token, now_ms(clock) + 1_000)  # released, rearmed
    await call(RenewReply, "renew", token, LEASE_MS)  # lost
    await call(ReleaseReply, "release", token, None)  # lost
    await clock.advance(1)
    token = (await call(LeaseReply, "lease", KEY, LEASE_MS))["token"]
    await call(CancelReply, "cancel")  # leased
    await call(RenewReply, "renew", token, LEASE_MS)  # canceled
    await call(ReleaseReply, "release", token, None)  # closed
    await call(CancelReply, "cancel")  # not leased
    await call(CloseReply, "close")
    hook.fail = 1
    await call(ArmReply, "arm", KEY, now_ms(clock), None, True)  # inline delivery failed
    assert seen == [
        "StatusClosed", "LeaseRefused", "Armed", "LeaseNotDue", "StatusOpen", "LeaseGranted",
        "LeaseRefused", "ArmDeferred", "Renewed", "Released", "HolderGone", "HolderGone",
        "LeaseGranted", "CancelReply", "HolderGone", "Released", "CancelReply", "CloseReply",
        "ArmedUndelivered",
    ]  # fmt: skip
