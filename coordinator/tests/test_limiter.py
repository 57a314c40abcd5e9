"""The limiter actor's protocol, run in the embedded Durable Object binding (real storage,
alarms and input gate) with a recording waker and the manual clock: no sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from kumofire_coordinator import (
    CoordinatorActor,
    CoordinatorEndpoint,
    Delivery,
    DeliveryAction,
    LeaseReply,
    LimiterActor,
    LimiterConfig,
    LimitsMessage,
)
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.durable_objects import LocalDurableObjectNamespace

NAME = "limiter:report"
LEASE_MS = 30_000
OFFER_MS = 10_000


def limits(
    concurrency: int | None = None,
    key_concurrency: int | None = None,
    rate: tuple[int, int] | None = None,
    key_rate: tuple[int, int] | None = None,
) -> LimitsMessage:
    return {
        "concurrency": concurrency,
        "key_concurrency": key_concurrency,
        "rate_limit": None if rate is None else list(rate),
        "key_rate_limit": None if key_rate is None else list(key_rate),
    }


@dataclass
class Waker:
    """Records wakes; leases a run's coordinator as told by `refuse` (run id -> reason),
    with growing tokens."""

    clock: ManualClock
    woken: list[tuple[str, float]] = field(default_factory=list)
    fail: bool = False
    leased: list[tuple[str, int]] = field(default_factory=list)
    named: list[tuple[str, int]] = field(default_factory=list)  # the tokens the limiter named
    refuse: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # after granting a lease, never answer (the caller dies meanwhile)
    wake_hang: bool = False  # a wake never answers (the limiter dies meanwhile)
    token: int = 100

    async def wake(self, run_id: str) -> None:
        if self.fail:
            raise ConnectionError("the coordinator could not be reached")
        if self.wake_hang:
            await asyncio.Event().wait()
        self.woken.append((run_id, self.clock.now()))

    async def lease(self, run_id: str, lease_ms: int, token: int) -> LeaseReply:
        """Grants its own growing tokens, not the one named (as a coordinator that has
        granted one as high does): the limiter writes the one granted."""
        self.named.append((run_id, token))
        reason = self.refuse.get(run_id)
        if reason == "error":
            raise ConnectionError("the coordinator could not be reached")
        if reason in ("closed", "canceled", "held"):
            return {"granted": False, "reason": reason}  # type: ignore[typeddict-item]
        self.token += 1
        self.leased.append((run_id, self.token))
        if self.hang:
            await asyncio.Event().wait()
        return {"granted": True, "token": self.token, "expires_ms": now_ms(self.clock) + lease_ms}

    def ids(self) -> list[str]:
        return [r for r, _ in self.woken]


@dataclass
class Hook:
    clock: ManualClock
    deliveries: list[str] = field(default_factory=list)

    async def deliver(self, key: str, delivery: int, note: str | None = None) -> Delivery:
        self.deliveries.append(key)
        return Delivery(DeliveryAction.SENT)


@dataclass
class Env:
    waker: Waker
    hook: Hook


class BothActors(CoordinatorEndpoint):
    def __init__(self, ctx: Any, env: Env) -> None:
        clock = env.waker.clock
        self.actor = CoordinatorActor(ctx.storage, clock, env.hook)
        self.limiter = LimiterActor(
            ctx.storage, clock, env.waker, LimiterConfig(offer_ms=OFFER_MS, max_offers=2)
        )


@pytest.fixture
def waker(clock: ManualClock) -> Waker:
    return Waker(clock)


@pytest.fixture
async def namespace(
    clock: ManualClock, tmp_path: Path, waker: Waker
) -> AsyncIterator[LocalDurableObjectNamespace]:
    ns = LocalDurableObjectNamespace(
        BothActors, path=tmp_path / "do", clock=clock, env=Env(waker, Hook(clock))
    )
    await ns.start()
    yield ns
    await ns.close()


def now_ms(clock: ManualClock) -> int:
    return int(clock.now() * 1000)


class Consumer:
    """Calls the limiter as a consumer does: one token per lease of a run."""

    def __init__(self, stub: Any, clock: ManualClock, lim: LimitsMessage) -> None:
        self.stub, self.clock, self.limits = stub, clock, lim
        self.tokens: dict[str, int] = {}

    async def acquire(self, run_id: str, key: str = "", priority: int = 0, due: int = 0) -> Any:
        token = self.tokens[run_id] = self.tokens.get(run_id, 0) + 1
        return await self.stub.limit_acquire(
            run_id, token, key, priority, due, LEASE_MS, self.limits
        )

    async def release(self, run_id: str) -> Any:
        return await self.stub.limit_release(run_id, self.tokens[run_id])

    async def held(self) -> list[str]:
        return list((await self.stub.limit_status())["held"])


async def test_concurrency_is_never_exceeded_and_a_freed_slot_wakes_the_next(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker
) -> None:
    c = Consumer(namespace.getByName(NAME), clock, limits(concurrency=2))
    replies = [await c.acquire(f"r{i}", due=i) for i in range(5)]
    assert [r["granted"] for r in replies] == [True, True, False, False, False]
    assert {r["reason"] for r in replies[2:]} == {"wait"}
    done: list[str] = []
    for _ in range(5):
        status = await c.stub.limit_status()
        assert len(status["held"]) + len(status["offered"]) <= 2
        run = status["held"][0]
        assert (await c.release(run)) == {"ok": True}
        done.append(run)
        for woken in waker.ids():
            if woken not in done and woken not in await c.held():
                assert (await c.acquire(woken))["granted"]
    assert sorted(done) == [f"r{i}" for i in range(5)]
    assert waker.ids() == ["r2", "r3", "r4"]  # each woken once, in due order


async def test_key_concurrency_limits_each_key_alone(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker
) -> None:
    c = Consumer(namespace.getByName(NAME), clock, limits(key_concurrency=1))
    got = {
        r: (await c.acquire(r, key=k))["granted"]
        for r, k in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c"), ("b2", "b")]
    }
    assert got == {"a1": True, "a2": False, "b1": True, "c1": True, "b2": False}
    await c.release("b1")
    assert waker.ids() == ["b2"]
    assert (await c.acquire("b2", key="b"))["granted"]


async def test_a_sliding_window_never_allows_more_than_the_limit_nor_starts_early(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker
) -> None:
    c = Consumer(namespace.getByName(NAME), clock, limits(rate=(5, 1_000)))
    starts: list[int] = []
    t0 = clock.now()

    async def start(run_id: str) -> bool:
        if (await c.acquire(run_id))["granted"]:
            starts.append(now_ms(clock))
            await c.release(run_id)
            return True
        return False

    for i in range(3):
        assert await start(f"early{i}")
    await clock.advance(0.5)
    results = [await start(f"r{i:02}") for i in range(12)]
    assert results.count(True) == 2  # 3 + 2 in the first window
    for _ in range(60):
        await clock.advance(0.05)
        for run_id in waker.ids():
            if run_id not in c.tokens or c.tokens[run_id] == 1:
                await start(run_id)
    assert len(starts) == 15
    for s in starts:  # in any window of 1,000 ms, at most 5 starts
        assert sum(1 for t in starts if s <= t < s + 1_000) <= 5
    assert starts[5] >= starts[0] + 1_000  # none early: the 6th waits for the 1st to leave
    offered = [t for _, t in waker.woken]
    assert offered[:3] == [t0 + 1.0] * 3  # offered the moment the window opened


@pytest.mark.parametrize("claim_after", [1.2, 4.5], ids=["within the window", "after it"])
async def test_a_rate_limit_counts_an_offered_run_when_it_claims_its_slot(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker, claim_after: float
) -> None:
    # A woken run starts when its delivery reaches a consumer, later than its offer: the
    # window counts that start (an offer is a start until claimed), so slow deliveries never
    # let a second round start beside the first.
    c = Consumer(namespace.getByName(NAME), clock, limits(rate=(2, 3_000)))
    t0 = clock.now()
    granted = [(await c.acquire(run_id))["granted"] for run_id in "abcdef"]
    assert granted == [True, True, False, False, False, False]
    starts = [0.0, 0.0]
    await clock.advance(3.0)
    assert waker.woken == [("c", t0 + 3.0), ("d", t0 + 3.0)]  # as the window opened
    await clock.advance(claim_after)  # their deliveries take this long
    for run_id in "cd":
        assert (await c.acquire(run_id))["granted"]
        starts.append(clock.now() - t0)
    while len(waker.woken) < 4 and clock.now() - t0 < 20:
        await clock.advance(0.1)
    for run_id in "ef":
        assert (await c.acquire(run_id))["granted"]
        starts.append(clock.now() - t0)
    assert [r for r, _ in waker.woken] == ["c", "d", "e", "f"]
    # The next two are offered 3 s after the claims, not 3 s after the offers.
    assert waker.woken[2][1] - t0 == pytest.approx(3.0 + claim_after + 3.0, abs=0.11)
    for s in starts:  # at most 2 starts in any 3 s
        assert sum(1 for t in starts if s <= t < s + 3.0 - 1e-6) <= 2, starts


class CountingStorage:
    """The object's real storage, recording each call that writes a row: (method, key)."""

    writes: ClassVar[list[tuple[str, str]]] = []

    def __init__(self, storage: Any) -> None:
        self._storage = storage

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._storage, name)
        if name in ("put", "delete", "setAlarm", "deleteAlarm"):

            async def counted(*args: Any) -> Any:
                key = args[0] if name in ("put", "delete") else ""
                CountingStorage.writes.append((name, str(key)))
                return await method(*args)

            return counted
        return method


class CountingLimiter(CoordinatorEndpoint):
    def __init__(self, ctx: Any, env: Env) -> None:
        clock = env.waker.clock
        self.actor = CoordinatorActor(ctx.storage, clock, env.hook)
        self.limiter = LimiterActor(
            CountingStorage(ctx.storage), clock, env.waker, LimiterConfig(offer_ms=OFFER_MS)
        )


async def test_a_rate_limited_run_placed_then_claimed_writes_the_limiter_record_once(
    clock: ManualClock, tmp_path: Path, waker: Waker
) -> None:
    # The offer made at a run's delivery is kept in memory only (a restart decides the claim
    # afresh), and so is the start it records: the claim moves that start to its own time
    # and writes the record then. Writing it at both cost a row more per run.
    CountingStorage.writes = []
    ns = LocalDurableObjectNamespace(
        CountingLimiter, path=tmp_path / "do", clock=clock, env=Env(waker, Hook(clock))
    )
    await ns.start()
    try:
        stub = ns.getByName(NAME)
        lim = limits(rate=(2, 3_000))
        for run_id in ("a", "b"):
            placed = await stub.limit_acquire(run_id, 0, "", 0, 0, OFFER_MS, lim)
            assert placed["granted"]
            if run_id == "a":
                CountingStorage.writes = []  # (the first call stored the limits)
        await clock.advance(1.0)
        for token, run_id in enumerate(("a", "b"), start=1):
            assert (await stub.limit_acquire(run_id, token, "", 0, 0, LEASE_MS, lim))["granted"]
            assert (await stub.limit_release(run_id, token))["ok"]
        meta = [w for w in CountingStorage.writes if w == ("put", "limiter")]
        assert len(meta) == 2, CountingStorage.writes  # one a run, at its claim
        # The window counts the claims (at 1 s), not the placements: a third run may start
        # at 4 s, not at 3 s.
        assert not (await stub.limit_acquire("c", 1, "", 0, 0, LEASE_MS, lim))["granted"]
        await clock.advance(2.0)
        assert waker.ids() == []
        await clock.advance(1.0)
        assert waker.ids() == ["c"]
        ns.evict(NAME)  # what was written says the same
        assert (await stub.limit_status())["offered"] == ["c"]
    finally:
        await ns.close()


async def test_priority_then_due_time_order_the_wait_list(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker
) -> None:
    c = Consumer(namespace.getByName(NAME), clock, limits(concurrency=1))
    assert (await c.acquire("holder"))["granted"]
    await c.acquire("late", due=10)
    await c.acquire("urgent", priority=5, due=20)
    await c.acquire("early", due=5)
    order = []
    current = "holder"
    for _ in range(3):
        await c.release(current)
        current = waker.ids()[-1]
        assert (await c.acquire(current))["granted"]
        order.append(current)
    assert order == ["urgent", "early", "late"]


async def test_round_robin_a_crowded_key_delays_a_lone_key_by_one_turn_at_most(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker
) -> None:
    c = Consumer(namespace.getByName(NAME), clock, limits(concurrency=1, key_concurrency=1))
    assert (await c.acquire("a000", key="a"))["granted"]
    for i in range(1, 100):
        await c.acquire(f"a{i:03}", key="a", due=i)
    await c.acquire("b000", key="b", due=1_000)
    current, turns = "a000", []
    for _ in range(3):
        await c.release(current)
        current = waker.ids()[-1]
        assert (await c.acquire(current, key=current[0]))["granted"]
        turns.append(current)
    assert turns == ["b000", "a001", "a002"]


async def test_a_dead_consumers_slot_frees_when_its_lease_expires(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker
) -> None:
    c = Consumer(namespace.getByName(NAME), clock, limits(concurrency=1))
    assert (await c.acquire("dead"))["granted"]
    assert not (await c.acquire("next"))["granted"]
    await clock.advance(29.999)
    assert waker.ids() == []
    await clock.advance(0.001)  # the limiter's alarm: the slot's lease ran out
    assert waker.ids() == ["next"]
    assert (await c.acquire("next"))["granted"]
    # The dead consumer comes back: no room, so its renew is refused.
    renew = await c.stub.limit_renew("dead", c.tokens["dead"], "", LEASE_MS)
    assert renew == {"ok": False, "reason": "lost"}


async def test_renewal_keeps_a_slot(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker
) -> None:
    c = Consumer(namespace.getByName(NAME), clock, limits(concurrency=1))
    await c.acquire("r1")
    await c.acquire("r2")
    for _ in range(5):
        await clock.advance(20)
        assert (await c.stub.limit_renew("r1", c.tokens["r1"], "", LEASE_MS))["ok"]
    assert waker.ids() == []
    assert await c.held() == ["r1"]


async def test_acquire_and_release_are_idempotent_and_fenced_by_the_token(
    namespace: LocalDurableObjectNamespace, clock: ManualClock
) -> None:
    stub = namespace.getByName(NAME)
    lim = limits(concurrency=1)
    first = await stub.limit_acquire("r1", 7, "", 0, 0, LEASE_MS, lim)
    again = await stub.limit_acquire("r1", 7, "", 0, 0, LEASE_MS, lim)
    assert first["granted"] and again["granted"]
    assert (await stub.limit_acquire("r2", 1, "", 0, 0, LEASE_MS, lim))["reason"] == "wait"
    assert (await stub.limit_acquire("r2", 2, "", 0, 0, LEASE_MS, lim))["reason"] == "wait"
    assert (await stub.limit_status())["waiting"] == 1
    # The run's lease moved to another consumer (token 8): it takes the slot over.
    assert (await stub.limit_acquire("r1", 8, "", 0, 0, LEASE_MS, lim))["granted"]
    assert (await stub.limit_acquire("r1", 7, "", 0, 0, LEASE_MS, lim)) == {
        "granted": False,
        "reason": "lost",
    }
    assert await stub.limit_release("r1", 7) == {"ok": False, "reason": "lost"}
    assert await stub.limit_release("r1", 8) == {"ok": True}
    assert await stub.limit_release("r1", 8) == {"ok": False, "reason": "lost"}
    assert (await stub.limit_status())["offered"] == ["r2"]


async def test_a_new_attempt_taking_its_slot_over_is_a_start_the_rate_limit_counts(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker
) -> None:
    # A run cut off while it ran (its consumer died, or the embedded runtime restarted) is
    # delivered again with a newer lease token and takes its slot over: its handler starts
    # again. Uncounted, that start let another run start inside the same window.
    stub = namespace.getByName(NAME)
    lim = limits(rate=(1, 60_000))
    starts: list[float] = []
    t0 = clock.now()
    assert (await stub.limit_acquire("r1", 1, "", 0, 0, LEASE_MS, lim))["granted"]
    starts.append(clock.now() - t0)
    await clock.advance(10)
    # The window is full: the new attempt waits for it, in line, as any start would.
    assert (await stub.limit_acquire("r1", 2, "", 0, 0, LEASE_MS, lim))["reason"] == "wait"
    assert (await stub.limit_acquire("r2", 1, "", 0, 1, LEASE_MS, lim))["reason"] == "wait"
    while len(starts) < 3 and clock.now() - t0 < 300:
        await clock.advance(1)
        for run_id in waker.ids():
            reply = await stub.limit_acquire(run_id, 3, "", 0, 0, LEASE_MS, lim)
            if reply["granted"]:
                starts.append(clock.now() - t0)
                await stub.limit_release(run_id, 3)
        waker.woken.clear()
    assert len(starts) == 3, starts
    for s in starts:  # at most one start in any 60 s
        assert sum(1 for t in starts if s <= t < s + 60) <= 1, starts
    # With room in the window, the new attempt keeps its slot and its start is counted.
    await clock.advance(120)
    assert (await stub.limit_acquire("r3", 1, "", 0, 0, LEASE_MS, lim))["granted"]
    await clock.advance(60)
    assert (await stub.limit_acquire("r3", 2, "", 0, 0, LEASE_MS, lim))["granted"]
    assert (await stub.limit_acquire("r4", 1, "", 0, 0, LEASE_MS, lim))["reason"] == "wait"


async def test_two_consumers_racing_for_the_last_slot_one_wins(
    namespace: LocalDurableObjectNamespace, clock: ManualClock
) -> None:
    stub = namespace.getByName(NAME)
    lim = limits(concurrency=2)
    assert (await stub.limit_acquire("r0", 1, "", 0, 0, LEASE_MS, lim))["granted"]
    replies = await asyncio.gather(
        *(stub.limit_acquire(f"r{i}", 1, "", 0, 0, LEASE_MS, lim) for i in range(1, 6))
    )
    assert sum(1 for r in replies if r["granted"]) == 1
    status = await stub.limit_status()
    assert len(status["held"]) == 2 and status["waiting"] == 4


async def test_an_unclaimed_offer_expires_is_made_again_then_dropped(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker
) -> None:
    c = Consumer(namespace.getByName(NAME), clock, limits(concurrency=1))
    await c.acquire("r1")
    await c.acquire("gone")  # canceled later, never claims its offer
    await c.acquire("r3", due=5)
    waker.fail = True  # the first wake is lost too
    await c.release("r1")
    assert (await c.stub.limit_status())["offered"] == ["gone"]
    waker.fail = False
    await clock.advance(OFFER_MS / 1000)
    assert waker.ids() == ["gone"]  # offered again, and woken
    await clock.advance(OFFER_MS / 1000)
    assert waker.ids() == ["gone", "r3"]  # two offers unclaimed: dropped, the next goes
    assert (await c.acquire("r3"))["granted"]


async def test_a_release_with_a_lease_hands_the_next_waiter_over_leased_and_holding_its_slot(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker
) -> None:
    c = Consumer(namespace.getByName(NAME), clock, limits(concurrency=1))
    await c.acquire("r1")
    await c.acquire("r2", key="", priority=3, due=7)
    await c.acquire("r3", due=1)
    reply = await c.stub.limit_release("r1", c.tokens["r1"], LEASE_MS)
    # r2 comes first (priority): its coordinator was leased for the caller, and the slot is
    # held under that lease's token, with no call of the caller's own.
    assert waker.leased == [("r2", 101)]
    assert reply == {
        "ok": True,
        "next": {"run_id": "r2", "key": "", "priority": 3, "due_ms": 7, "token": 101},
    }
    assert waker.ids() == []  # handed over, not woken
    assert await c.held() == ["r2"]
    assert (await c.acquire("late", due=10))["reason"] == "wait"  # the slot is taken
    renewed = await c.stub.limit_renew("r2", 101, "", LEASE_MS)
    assert renewed["ok"]
    # The last release, with nobody waiting but r3 and `late`: r3 goes, by due time.
    assert (await c.stub.limit_release("r2", 101, LEASE_MS))["next"]["run_id"] == "r3"
    assert (await c.stub.limit_release("r3", 0, LEASE_MS)) == {"ok": False, "reason": "lost"}
    assert (await c.stub.limit_release("r3", 102, LEASE_MS))["next"]["run_id"] == "late"


async def test_a_handed_over_run_whose_coordinator_is_closed_leaves_the_line_for_the_next(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker
) -> None:
    c = Consumer(namespace.getByName(NAME), clock, limits(concurrency=1))
    await c.acquire("r1")
    for i, run_id in enumerate(["canceled", "closed", "r4"]):
        await c.acquire(run_id, due=i)
    waker.refuse.update(canceled="canceled", closed="closed")
    reply = await c.stub.limit_release("r1", c.tokens["r1"], LEASE_MS)
    assert reply["next"]["run_id"] == "r4"
    assert await c.stub.limit_status() == {"held": ["r4"], "offered": [], "waiting": 0}
    assert await c.stub.limit_waiting(["canceled", "closed"]) == {"waiting": [], "paused": False}


@pytest.mark.parametrize("reason", ["held", "error"])
async def test_a_handed_over_run_whose_lease_is_held_keeps_an_offer_and_is_woken(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker, reason: str
) -> None:
    c = Consumer(namespace.getByName(NAME), clock, limits(concurrency=1))
    await c.acquire("r1")
    await c.acquire("r2")
    await c.acquire("r3", due=1)
    waker.refuse["r2"] = reason  # a delivery of r2 holds its lease, or it could not be asked
    reply = await c.stub.limit_release("r1", c.tokens["r1"], LEASE_MS)
    assert reply == {"ok": True, "next": None}
    assert waker.ids() == ["r2"]  # woken instead, as without a hand-over
    assert await c.stub.limit_status() == {"held": [], "offered": ["r2"], "waiting": 1}
    namespace.evict(NAME)  # the offer is stored: it outlives a restart
    assert (await c.acquire("r2"))["granted"]  # the delivery under way claims it
    assert (await c.acquire("r3", due=1))["reason"] == "wait"


@pytest.mark.parametrize("lease", ["granted", "refused"])
async def test_a_limiter_that_dies_after_leasing_a_handed_over_run_admits_no_more(
    clock: ManualClock, tmp_path: Path, waker: Waker, lease: str
) -> None:
    """The crash point between a hand-over's early lease (sent, its writes staged beside it)
    and its answer: the staged writes committed, so the waiter holds the slot under the
    token the limiter named, out of the line. Never two at once: a newer token of the run
    (its coordinator, leased early so due, delivers it when that lease expires) takes the
    slot over; if the lease was refused, nothing does, and the slot expires with the lease
    it assumed (the run, parked in no line, is the coordinator's fallback's or
    reconciliation's: `tests/test_limits_handoff.py`)."""
    ns = LocalDurableObjectNamespace(
        BothActors, path=tmp_path / "do", clock=clock, env=Env(waker, Hook(clock))
    )
    await ns.start()
    c = Consumer(ns.getByName(NAME), clock, limits(concurrency=1))
    await c.acquire("r1")
    await c.acquire("r2")
    waker.hang = True  # r2's coordinator is leased, and the limiter dies before it answers
    release = asyncio.ensure_future(c.stub.limit_release("r1", c.tokens["r1"], LEASE_MS))
    await clock.advance(0)
    assert waker.named == [("r2", now_ms(clock))] and waker.leased == [("r2", 101)]
    await ns.abort()
    with pytest.raises(asyncio.CancelledError):
        await release
    waker.hang = False
    ns = LocalDurableObjectNamespace(
        BothActors, path=tmp_path / "do", clock=clock, env=Env(waker, Hook(clock))
    )
    await ns.start()
    try:
        c.stub = ns.getByName(NAME)
        assert await c.stub.limit_status() == {"held": ["r2"], "offered": [], "waiting": 0}
        assert (await c.acquire("r3", due=5))["reason"] == "wait"
        if lease == "granted":
            newer = now_ms(clock) + 1
            assert (await c.stub.limit_acquire("r2", newer, "", 0, 0, LEASE_MS, c.limits))[
                "granted"
            ]
            assert await c.stub.limit_status() == {"held": ["r2"], "offered": [], "waiting": 1}
        else:
            await clock.advance(LEASE_MS / 1000)
            assert waker.ids() == ["r3"]
            assert await c.stub.limit_status() == {"held": [], "offered": ["r3"], "waiting": 0}
    finally:
        await ns.close()


async def test_a_limiter_alarm_that_dies_waking_an_offered_run_offers_it_again_later(
    clock: ManualClock, tmp_path: Path, waker: Waker
) -> None:
    """The crash point of the limiter's alarm between writing its offers and waking their
    runs: the offer is stored, nobody is told; it expires and is made again, never beside
    another run."""
    ns = LocalDurableObjectNamespace(
        BothActors, path=tmp_path / "do", clock=clock, env=Env(waker, Hook(clock))
    )
    await ns.start()
    c = Consumer(ns.getByName(NAME), clock, limits(concurrency=1))
    t0 = clock.now()
    await c.acquire("r1")  # its consumer dies: the slot expires with its lease
    await c.acquire("r2", due=1)
    waker.wake_hang = True
    await clock.advance(LEASE_MS / 1000)  # the alarm offers r2 the slot, then hangs waking it
    await ns.abort()
    waker.wake_hang = False
    assert waker.woken == []
    ns = LocalDurableObjectNamespace(
        BothActors, path=tmp_path / "do", clock=clock, env=Env(waker, Hook(clock))
    )
    await ns.start()
    try:
        c.stub = ns.getByName(NAME)
        assert await c.stub.limit_status() == {"held": [], "offered": ["r2"], "waiting": 0}
        assert (await c.acquire("r3", due=5))["reason"] == "wait"  # the offer holds the slot
        await clock.advance(OFFER_MS / 1000)  # it expires unclaimed: offered again, woken
        assert waker.woken == [("r2", t0 + (LEASE_MS + OFFER_MS) / 1000)]
        assert await c.stub.limit_status() == {"held": [], "offered": ["r2"], "waiting": 1}
        assert (await c.acquire("r2"))["granted"]
    finally:
        await ns.close()


async def test_releases_in_one_request_hand_each_freed_slot_over_in_the_wait_order(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker
) -> None:
    """`limit_release_many` is `limit_release` with `lease_ms` for each pair, in one request:
    each freed slot goes to the next waiter in order (the i-th to the i-th freed), leased
    for the caller; a stale token is answered `lost`; a waiter whose coordinator is closed
    passes its slot to the next; every write in one commit."""
    c = Consumer(namespace.getByName(NAME), clock, limits(concurrency=3))
    for run_id in ("r1", "r2", "r3"):
        await c.acquire(run_id)
    for i, run_id in enumerate(["w1", "gone", "w2", "w3"]):
        await c.acquire(run_id, due=i)
    waker.refuse["gone"] = "canceled"
    reply = await c.stub.limit_release_many(
        ["r1", "r2", "r3", "r3"], [c.tokens["r1"], c.tokens["r2"] + 5, c.tokens["r3"], 1],
        LEASE_MS,
    )  # fmt: skip
    assert [r["ok"] for r in reply["released"]] == [True, False, True, False]
    assert reply["released"][1] == {"ok": False, "reason": "lost"}  # a stale token frees nothing
    handed = [reply["released"][i]["next"] for i in (0, 2)]
    # r1's slot went to w1; r3's to `gone` (canceled: it left the line) and then to w2.
    assert [h["run_id"] for h in handed] == ["w1", "w2"]
    assert [r for r, _ in waker.leased] == ["w1", "w2"] and waker.ids() == []
    assert [h["token"] for h in handed] == [101, 102]
    assert await c.stub.limit_status() == {"held": ["r2", "w1", "w2"], "offered": [], "waiting": 1}
    namespace.evict(NAME)  # all of it was written
    assert await c.stub.limit_status() == {"held": ["r2", "w1", "w2"], "offered": [], "waiting": 1}
    assert await c.stub.limit_waiting(["gone", "w3"]) == {"waiting": ["w3"], "paused": False}
    # With fewer waiters than freed slots, the rest of the capacity stays free.
    reply = await c.stub.limit_release_many(["w1", "w2"], [101, 102], LEASE_MS)
    assert [r["next"] for r in reply["released"]][1] is None
    assert reply["released"][0]["next"]["run_id"] == "w3"
    assert (await c.acquire("late"))["granted"]


async def test_placements_in_one_request_are_acquires_with_token_zero_in_order(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker
) -> None:
    """`limit_place_many` places each run as `limit_acquire` with token 0 would, in the order
    asked, in one request: the first runs the capacity allows get offers (kept in memory,
    claimed by their consumers), the rest wait in line, stored, in the wait order; placing a
    run again updates it in place. Nothing is woken: the caller delivers the runs with a
    slot."""
    c = Consumer(namespace.getByName(NAME), clock, limits(concurrency=2, key_concurrency=1))
    reply = await c.stub.limit_place_many(
        ["a1", "a2", "b1", "b2"], ["a", "a", "b", "b"], [0, 0, 0, 9], [1, 2, 3, 4], OFFER_MS,
        c.limits,
    )  # fmt: skip
    assert [r["granted"] for r in reply["placed"]] == [True, False, True, False]
    assert reply["placed"][1] == {"granted": False, "reason": "wait"}
    assert await c.stub.limit_status() == {"held": [], "offered": ["a1", "b1"], "waiting": 2}
    assert waker.ids() == []
    again = await c.stub.limit_place_many(["a2"], ["a"], [0], [2], OFFER_MS, c.limits)
    assert again["placed"] == [{"granted": False, "reason": "wait"}]
    namespace.evict(NAME)  # the offers were in memory only; the line was stored
    assert await c.stub.limit_status() == {"held": [], "offered": [], "waiting": 2}
    assert await c.stub.limit_waiting(["a1", "a2", "b2"]) == {
        "waiting": ["a2", "b2"], "paused": False,
    }  # fmt: skip
    # The claims are decided afresh after the restart, in the wait order.
    assert (await c.acquire("a1", key="a", due=1))["granted"]
    assert (await c.acquire("b2", key="b", priority=9, due=4))["granted"]
    assert (await c.acquire("b1", key="b", due=3)) == {"granted": False, "reason": "wait"}


async def test_a_limiter_that_dies_after_leasing_runs_handed_over_together_admits_no_more(
    clock: ManualClock, tmp_path: Path, waker: Waker
) -> None:
    """The crash point of `limit_release_many` between the waiters' early leases (sent, the
    hand-overs' writes staged beside them) and the answers: the waiters hold the freed slots
    under the token named, and unclaimed those expire with the leases assumed."""
    ns = LocalDurableObjectNamespace(
        BothActors, path=tmp_path / "do", clock=clock, env=Env(waker, Hook(clock))
    )
    await ns.start()
    c = Consumer(ns.getByName(NAME), clock, limits(concurrency=2))
    await c.acquire("r1")
    await c.acquire("r2")
    await c.acquire("w1", due=1)
    await c.acquire("w2", due=2)
    waker.hang = True  # the waiters' coordinators are leased; the limiter dies before writing
    release = asyncio.ensure_future(
        c.stub.limit_release_many(["r1", "r2"], [c.tokens["r1"], c.tokens["r2"]], LEASE_MS)
    )
    await clock.advance(0)
    assert sorted(waker.leased) == [("w1", 101), ("w2", 102)]
    await ns.abort()
    with pytest.raises(asyncio.CancelledError):
        await release
    waker.hang = False
    ns = LocalDurableObjectNamespace(
        BothActors, path=tmp_path / "do", clock=clock, env=Env(waker, Hook(clock))
    )
    await ns.start()
    try:
        c.stub = ns.getByName(NAME)
        # The staged writes committed beside the leases: the waiters hold the slots under
        # the token named, out of the line; no more than two at once.
        assert await c.stub.limit_status() == {"held": ["w1", "w2"], "offered": [], "waiting": 0}
        assert (await c.acquire("w3", due=5))["reason"] == "wait"
        await clock.advance(LEASE_MS / 1000)  # unclaimed, they expire with the leases
        assert waker.ids() == ["w3"]
        assert await c.stub.limit_status() == {"held": [], "offered": ["w3"], "waiting": 0}
    finally:
        await ns.close()


async def test_a_handed_over_run_never_started_frees_its_slot_when_the_lease_expires(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker
) -> None:
    c = Consumer(namespace.getByName(NAME), clock, limits(concurrency=1))
    await c.acquire("r1")
    await c.acquire("r2")
    assert (await c.stub.limit_release("r1", c.tokens["r1"], LEASE_MS))["next"]["token"] == 101
    # The consumer it went to died before starting it: slot and lease expire together, and
    # the run's coordinator (leased early, so due) delivers it again: its newer lease takes
    # the slot.
    await clock.advance(LEASE_MS / 1000)
    assert await c.held() == []
    c.tokens["r2"] = 200
    assert (await c.stub.limit_acquire("r2", 201, "", 0, 0, LEASE_MS, c.limits))["granted"]


async def test_waiting_tells_which_runs_are_in_line(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker
) -> None:
    c = Consumer(namespace.getByName(NAME), clock, limits(concurrency=1))
    await c.acquire("r1")
    await c.acquire("r2", due=1)
    await c.acquire("r3", due=2)
    asked = ["r1", "r2", "r3", "unknown"]
    assert await c.stub.limit_waiting(asked) == {"waiting": ["r2", "r3"], "paused": False}
    await c.release("r1")  # r2 is offered the slot: no longer in line
    assert await c.stub.limit_waiting(asked) == {"waiting": ["r3"], "paused": False}


async def test_a_paused_limiter_grants_nothing_and_on_resume_serves_its_line_in_order(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker
) -> None:
    c = Consumer(namespace.getByName(NAME), clock, limits(concurrency=1))
    await c.acquire("r1")
    await c.acquire("r2", due=1)
    assert await c.stub.limit_pause(True) == {"paused": True}
    assert await c.acquire("r3", priority=5) == {"granted": False, "reason": "paused"}
    await c.release("r1")  # the running run ends: its slot goes to nobody
    assert waker.ids() == []
    assert await c.stub.limit_status() == {"held": [], "offered": [], "waiting": 2}
    assert (await c.stub.limit_waiting(["r2"]))["paused"] is True
    assert await c.stub.limit_pause(False) == {"paused": False}
    assert waker.ids() == ["r3"]  # the line is served in order: priority first
    assert (await c.acquire("r3", priority=5))["granted"]


async def test_forget_drops_a_waiter_and_passes_its_offer_on(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker
) -> None:
    c = Consumer(namespace.getByName(NAME), clock, limits(concurrency=1))
    await c.acquire("r1")
    await c.acquire("canceled1", due=1)
    await c.acquire("canceled2", due=2)
    await c.acquire("r4", due=3)
    assert await c.stub.limit_forget("canceled2") == {"forgotten": True}
    await c.release("r1")
    assert waker.ids() == ["canceled1"]
    assert await c.stub.limit_forget("canceled1") == {"forgotten": True}
    assert waker.ids() == ["canceled1", "r4"]


async def test_expire_slots_frees_only_the_named_slots_of_leases_granted_before(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker
) -> None:
    c = Consumer(namespace.getByName(NAME), clock, limits(concurrency=2))
    await c.acquire("old")  # token 1: a lease of a process known gone
    since = now_ms(clock)
    assert (await c.stub.limit_acquire("new", since, "", 0, 0, LEASE_MS, c.limits))["granted"]
    await c.acquire("waiter", due=1)
    assert waker.ids() == []
    reply = await c.stub.limit_expire_slots(since, ["old", "new", "waiter", "unknown"])
    assert reply == {"expired": ["old"]}  # `new` was granted since; `waiter` holds none
    assert waker.ids() == ["waiter"]  # the freed capacity goes on at once
    assert await c.stub.limit_expire_slots(since, ["old"]) == {"expired": []}
    assert (await c.stub.limit_status())["held"] == ["new"]


async def test_the_limiter_survives_eviction(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker, tmp_path: Path
) -> None:
    c = Consumer(namespace.getByName(NAME), clock, limits(concurrency=1))
    await c.acquire("r1")
    await c.acquire("r2")
    await namespace.close()
    ns = LocalDurableObjectNamespace(
        BothActors, path=tmp_path / "do", clock=clock, env=Env(waker, Hook(clock))
    )
    await ns.start()
    try:
        stub = ns.getByName(NAME)
        assert await stub.limit_status() == {"held": ["r1"], "offered": [], "waiting": 1}
        await clock.advance(LEASE_MS / 1000)  # the stored alarm fires in the new instance
        assert waker.ids() == ["r2"]
    finally:
        await ns.close()


async def test_a_coordinator_in_the_same_class_still_delivers(
    namespace: LocalDurableObjectNamespace, clock: ManualClock
) -> None:
    stub = namespace.getByName("run_1")
    await stub.arm("run_1", now_ms(clock))
    await clock.advance(0)
    assert (await stub.status())["phase"] == "delivered"


async def test_a_renew_the_limiter_cannot_place_takes_a_slot_only_if_there_is_room(
    namespace: LocalDurableObjectNamespace, clock: ManualClock, waker: Waker
) -> None:
    # As after the limiter's storage was lost: running runs renew slots it does not know.
    stub = namespace.getByName(NAME)
    await stub.limit_acquire("other", 1, "", 0, 0, LEASE_MS, limits(concurrency=2))
    assert (await stub.limit_renew("r1", 5, "", LEASE_MS))["ok"]
    assert await stub.limit_renew("r2", 5, "", LEASE_MS) == {"ok": False, "reason": "lost"}
    assert (await stub.limit_status())["held"] == ["other", "r1"]
