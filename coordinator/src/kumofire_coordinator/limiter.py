"""The limiter actor: a job's concurrency and rate limits, kept in one place for every consumer.

One actor per job (named `limiter:<job>`), living in the same Durable Object class as the
coordinators. Like the coordinator it knows nothing of D1 or jobs: run ids, keys, priorities
and due times are opaque, and a waiting run is woken through a `Waker` the host plugs in
(the run's own coordinator, armed for now). See docs/architecture.md, "The limiter actor".

Consumers `acquire` a slot after their run's lease and before the `running` write. A run is
granted a slot only when it is what the wait order picks next; otherwise it waits in the list
and is woken when capacity frees: the limiter reserves a slot for it (an offer, token 0),
writes that, and only then wakes it, or, for a consumer releasing a slot with `lease_ms`,
leases the run's coordinator and hands the run with its slot to that consumer. Slots are
leased like runs: renewed with the run's lease, freed when it expires (the alarm), so a dead
consumer's slot comes back.

The object keeps its records in memory after its first call (it alone writes them) and writes
each change through. Every method changes memory without awaiting anything but storage, so the
input gate makes it atomic; the wakes (calls to other objects) come last, after the writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .actor import Clock
from .limiter_order import (
    claim_start,
    has_room,
    next_check,
    pick,
    prune_windows,
    rate_allows,
    record_start,
)
from .limiter_state import (
    META_KEY,
    SLOT_PREFIX,
    WAIT_PREFIX,
    Limits,
    Meta,
    Slot,
    Waiter,
    WaitQueue,
)
from .messages import (
    AcquireReply,
    ExpireSlotsReply,
    ForgetReply,
    Handoff,
    LeaseReply,
    LimiterStatus,
    LimitsMessage,
    PauseReply,
    PlacementsReply,
    SlotReleaseReply,
    SlotReleasesReply,
    SlotRenewReply,
    WaitingReply,
)
from .storage import ActorStorage

# A release hands over at most this many waiters in turn whose coordinators turn out closed
# (canceled runs); past that the freed capacity is offered through the waker.
HANDOFF_TRIES = 3


class LimiterStorage(ActorStorage, Protocol):
    async def list(self, options: Mapping[str, Any] | None = None) -> Any: ...


class Waker(Protocol):
    """The limiter's reach into the runs' coordinators, plugged in by the host."""

    async def wake(self, run_id: str) -> None:
        """Have `run_id` delivered again now (its coordinator armed for now)."""
        ...

    def lease(self, run_id: str, lease_ms: int, token: int) -> Awaitable[LeaseReply]:
        """Lease `run_id`'s coordinator early (it is parked in line) for a consumer the
        limiter hands it to (`release` with `lease_ms`), under `token` if the coordinator
        has granted none as high. Sent when called, as a Durable Object stub's call is (the
        limiter asks several at once)."""
        ...


@dataclass(frozen=True, slots=True)
class LimiterConfig:
    """`offer_ms`: how long a woken waiter's slot stays reserved for it; after `max_offers`
    unclaimed offers the waiter is dropped (its parked coordinator brings it back)."""

    offer_ms: int = 60_000
    max_offers: int = 3


class LimiterActor:
    def __init__(
        self,
        storage: LimiterStorage,
        clock: Clock,
        waker: Waker,
        config: LimiterConfig | None = None,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._waker = waker
        self._config = config or LimiterConfig()
        self._loaded = False
        self._meta = Meta()
        self._meta_dirty = False
        self._slots: dict[str, Slot] = {}
        self._waiters: dict[str, Waiter] = {}
        self._queue = WaitQueue()
        self._alarm: int | None = None
        self._limits = Limits()  # `_meta.limits` parsed (set with it)
        self._token = 0  # the last lease token named by `release_many`

    # --- calls from consumers ---------------------------------------------------------------

    async def acquire(
        self,
        run_id: str,
        token: int,
        key: str,
        priority: int,
        due_ms: int,
        lease_ms: int,
        limits: LimitsMessage,
    ) -> AcquireReply:
        """A slot for `run_id` under lease `token`, or a place in the wait list. Idempotent
        by run id and token; a newer token of the same run takes its slot over."""
        now = await self._begin()
        self._set_limits(limits)
        woken: list[str] = []
        reply = await self._acquire(run_id, token, key, priority, due_ms, lease_ms, now, woken)
        await self._commit(now)
        await self._wake(woken)
        return reply

    async def place_many(
        self,
        run_ids: list[str],
        keys: list[str],
        priorities: list[int],
        due_ms: list[int],
        offer_ms: int,
        limits: LimitsMessage,
    ) -> PlacementsReply:
        """`acquire(run_id, 0, key, priority, due, offer_ms, limits)` (a placement) for each
        run, in order, in one request: the runs of one `create_many`, their coordinators
        armed (parked) already. One commit, then the wakes of every run given capacity."""
        now = await self._begin()
        self._set_limits(limits)
        woken: list[str] = []
        replies: list[AcquireReply] = []
        for run_id, key, priority, due in zip(run_ids, keys, priorities, due_ms, strict=True):
            replies.append(await self._acquire(run_id, 0, key, priority, due, offer_ms, now, woken))
        await self._commit(now)
        await self._wake(woken)
        return {"placed": replies}

    def _set_limits(self, limits: LimitsMessage) -> None:
        if self._meta.limits != limits:
            self._meta.limits = limits
            self._meta_dirty = True
            self._limits = _parse(limits)

    async def _acquire(
        self,
        run_id: str,
        token: int,
        key: str,
        priority: int,
        due_ms: int,
        lease_ms: int,
        now: int,
        woken: list[str],
    ) -> AcquireReply:
        """`acquire`'s decision, in memory and pending writes; the runs to wake are added to
        `woken` (the caller commits, then wakes them)."""
        slot = self._slots.get(run_id)
        if slot is not None and not slot.offer and token > slot.token and self._limits.rated:
            # A new attempt of a run cut off while it held the slot: its handler starts
            # again, a start the rate windows count. With no room in them it waits in line
            # as any start would (the cut-off attempt's start stays counted).
            if rate_allows(self._limits, self._meta, self._slots, slot.key, now):
                record_start(self._limits, self._meta, slot.key, now)
                self._meta_dirty = True
            else:
                await self._free(run_id)
                slot = None
        if slot is not None:
            if not slot.offer and slot.token > token:
                return {"granted": False, "reason": "lost"}
            if slot.offer and token and claim_start(self._limits, self._meta, slot, now):
                self._meta_dirty = True
            slot.token = token
            slot.expires = now + lease_ms
            await self._put_slot(run_id, slot)
            await self._drop_waiter(run_id)
        else:
            key = key if self._limits.keyed else ""
            waiter = self._waiters.get(run_id)
            if waiter is not None:  # without a slot, a waiter is in the queue
                self._queue.remove(run_id, waiter)
            fresh = Waiter(key, priority, due_ms, waiter.offers if waiter else 0)
            self._waiters[run_id] = fresh
            self._queue.add(run_id, fresh)
            woken += await self._fill(now, claimant=(run_id, token, lease_ms, waiter is not None))
            if run_id not in self._slots and fresh != waiter:
                await self._storage.put(WAIT_PREFIX + run_id, fresh.to_storage())
        # The reply is decided before the wakes: other calls may run while they are awaited.
        granted = self._slots.get(run_id)
        if granted is not None and granted.token == token:
            return {"granted": True, "expires_ms": granted.expires}
        return {"granted": False, "reason": "paused" if self._meta.paused else "wait"}

    async def renew(self, run_id: str, token: int, key: str, lease_ms: int) -> SlotRenewReply:
        """Extend the slot with the run's lease. A slot the limiter does not know (it expired,
        or the limiter's storage was lost) is taken again only if the limits allow it now."""
        now = await self._begin()
        slot = self._slots.get(run_id)
        if slot is None or slot.offer:
            key = key if self._limits.keyed else ""
            if slot is None and not has_room(self._limits, self._slots, key):
                return {"ok": False, "reason": "lost"}
            slot = Slot(key=key, token=token, expires=now, start=None)
            self._slots[run_id] = slot
            await self._drop_waiter(run_id)
        elif slot.token != token:
            return {"ok": False, "reason": "lost"}
        slot.token = token
        slot.expires = now + lease_ms
        await self._put_slot(run_id, slot)
        await self._commit(now)
        return {"ok": True, "expires_ms": slot.expires}

    async def release(self, run_id: str, token: int, lease_ms: int = 0) -> SlotReleaseReply:
        """The run is done with its slot (finished, retried later, or never started). With
        `lease_ms`, the first waiter the freed capacity goes to is handed to the caller
        instead of woken: the limiter leases its parked coordinator early (`Waker.lease`) and
        gives it the slot under that lease's token, and `next` names it; the caller starts
        it at once, with no delivery through the queue and no call of its own to the
        coordinator or to `acquire`. A waiter whose coordinator is closed or canceled leaves
        the line and the next is tried; one whose lease is held (a delivery of it under way)
        keeps its slot as an offer and is woken, as without `lease_ms`."""
        if lease_ms > 0:
            return (await self.release_many([run_id], [token], lease_ms))["released"][0]
        now = await self._begin()
        slot = self._slots.get(run_id)
        if slot is None or slot.offer or slot.token != token:
            return {"ok": False, "reason": "lost"}
        await self._free(run_id)
        woken = await self._fill(now)
        await self._commit(now)
        await self._wake(woken)
        return {"ok": True}

    async def release_many(
        self, run_ids: list[str], tokens: list[int], lease_ms: int
    ) -> SlotReleasesReply:
        """`release(run_id, token, lease_ms)` for each pair, in one request (a consumer's
        releases of one loop turn): each freed slot goes to the next waiter in order, handed
        to the caller; their coordinators are leased at once, under tokens this limiter
        names, and the writes that assume the leases granted go beside them (see
        `_stage`). `released` answers each pair in order."""
        now = await self._begin()
        replies: list[SlotReleaseReply] = []
        freed: list[int] = []  # indexes of the pairs whose slot was freed
        for run_id, token in zip(run_ids, tokens, strict=True):
            slot = self._slots.get(run_id)
            if slot is None or slot.offer or slot.token != token:
                replies.append({"ok": False, "reason": "lost"})
                continue
            # Decided in memory; the released slot's record is deleted with the hand-overs'
            # writes, in their commit (should this object restart before it, the slot
            # expires with its old lease: the limit never admits more).
            del self._slots[run_id]
            freed.append(len(replies))
            replies.append({"ok": True, "next": None})
        if not freed:
            return {"released": replies}
        woken = await self._fill(now, handoffs=len(freed))
        wake: list[str] = woken[len(freed) :]
        released = [run_ids[index] for index in freed]
        # Each freed slot's waiter (the i-th goes to the i-th freed slot): their coordinators
        # leased at once; a waiter whose coordinator turns out closed passes the slot to the
        # next in line, at most HANDOFF_TRIES in all per slot.
        tries = list(zip(freed, woken[: len(freed)], strict=False))
        for _ in range(HANDOFF_TRIES):
            if not tries:
                break
            token, expires = self._next_token(now), now + lease_ms
            calls = self._lease_all([run_id for _, run_id in tries], lease_ms, token)
            for _, run_id in tries:
                await self._stage(run_id, token, expires)
            await self._delete_released(released)
            released = []
            grants = await _answers(calls)
            now = await self._begin()
            retry: list[tuple[int, str]] = []
            # No call out below: the leases' outcomes and the writes after the loop go in one
            # commit (with the staged ones, if they have not committed yet).
            for (index, run_id), grant in zip(tries, grants, strict=True):
                passed, more = await self._hand_over(run_id, grant, (token, expires), wake, now)
                if passed is not None:
                    replies[index] = {"ok": True, "next": passed}
                elif more:
                    wake += more[1:]
                    retry.append((index, more[0]))
            tries = retry
        wake += [run_id for _, run_id in tries]
        await self._delete_released(released)  # (no waiter to hand over: nothing staged)
        await self._commit(now)
        await self._wake(wake)
        return {"released": replies}

    def _next_token(self, now: int) -> int:
        """A lease token for the coordinators of the waiters handed over now: a time, as the
        coordinators' own tokens are, growing across this object's requests."""
        self._token = max(now, self._token + 1)
        return self._token

    def _lease_all(
        self, run_ids: list[str], lease_ms: int, token: int
    ) -> list[asyncio.Future[LeaseReply] | None]:
        """Send the early leases of the coordinators of `run_ids` (None: the call could not
        be sent). Sent before this request writes anything: a call out waits for the
        caller's pending writes (the output gate). Other calls may run while they are
        awaited: they see the offers, so nobody else takes their capacity."""
        calls: list[asyncio.Future[LeaseReply] | None] = []
        for run_id in run_ids:
            try:  # (a Future, as a stub's call is, is awaited as it is: no task to start)
                calls.append(asyncio.ensure_future(self._waker.lease(run_id, lease_ms, token)))
            except Exception:
                calls.append(None)
        return calls

    async def _stage(self, run_id: str, token: int, expires: int) -> None:
        """Write what a granted early lease under `token` means (the waiter's slot under it,
        its wait entry gone) before the lease is answered, so that these writes commit
        beside the coordinators' instead of after them, and the answer waits for one commit,
        not two. Memory still holds the offer until the grant comes (`_hand_over`), which
        puts right a lease refused or granted under another token, and a call that took the
        offer meanwhile writes over these. Should this object restart before that, the slot
        expires with the lease it assumed: the limit never admits more (a refused waiter
        out of the line meanwhile is the crash point in docs/architecture.md)."""
        slot = self._slots.get(run_id)
        if slot is None:
            return
        await self._storage.put(
            SLOT_PREFIX + run_id, Slot(slot.key, token, expires, slot.start).to_storage()
        )
        await self._storage.delete(WAIT_PREFIX + run_id)

    async def _delete_released(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            if run_id not in self._slots:  # (not taken again meanwhile by a renew)
                await self._storage.delete(SLOT_PREFIX + run_id)

    async def _hand_over(
        self,
        run_id: str,
        grant: LeaseReply | None,
        staged: tuple[int, int],
        wake: list[str],
        now: int,
    ) -> tuple[Handoff | None, list[str]]:
        """Give `run_id` (offered in memory by `_fill(handoffs=...)`, its hand-over written
        under the token and expiry `staged` by `_stage`) the offered slot under the token of
        the early lease of its coordinator, `grant` (None: the lease call failed). Returns
        the run handed over (or None) and, if its coordinator was closed or canceled (the
        run leaves the line), the runs its capacity went to: the caller hands the first over
        in turn. A run to wake instead is added to `wake`."""
        slot = self._slots.get(run_id)
        waiter = self._waiters.get(run_id)
        if slot is None and waiter is not None:
            # Its offer expired while the lease was asked (it is back in the queue): the
            # staged delete of its wait entry is undone. (Its early lease made it due: if
            # granted and unused, it is delivered again when that lease expires.)
            await self._storage.put(WAIT_PREFIX + run_id, waiter.to_storage())
            return None, []
        if grant is not None and grant["granted"]:
            token = int(grant["token"])
            if slot is None or waiter is None or (not slot.offer and slot.token >= token):
                # The offer went meanwhile (forgotten, or claimed by a delivery of the run),
                # and its writes over the staged ones: the early lease made the run due, so
                # when it expires unused the run is delivered again and decided afresh.
                return None, []
            slot.token = token
            # The staged expiry, or the lease's if later (granted after the staging: the
            # stored record may end a few ms before the lease; it serves only after a restart).
            slot.expires = max(staged[1], int(grant["expires_ms"]))
            if token != staged[0]:  # granted under another token than the one written
                await self._put_slot(run_id, slot)
            await self._drop_waiter(run_id, stored=False)
            handed: Handoff = {"run_id": run_id, "key": waiter.key, "priority": waiter.priority,
                               "due_ms": waiter.due, "token": token}  # fmt: skip
            return handed, []
        if slot is None or not slot.offer:
            return None, []
        if grant is not None and grant["reason"] in ("closed", "canceled"):
            # The run was canceled (or its coordinator lost: reconciliation re-arms it, and
            # its delivery joins the line again): it leaves the line, the slot passes on.
            await self._free(run_id, unstart=True)
            await self._drop_waiter(run_id, stored=False)
            return None, await self._fill(now, handoffs=1)
        # Its lease is held (a delivery under way) or could not be asked: store the offer and
        # wake the run as any offered waiter, so that a holder told to wait and park gives
        # way to a delivery that claims it. (Both records are written over the staged ones.)
        if waiter is not None:
            waiter.offers += 1
            await self._storage.put(WAIT_PREFIX + run_id, waiter.to_storage())
        await self._storage.put(SLOT_PREFIX + run_id, slot.to_storage())
        wake.append(run_id)
        return None, []

    async def forget(self, run_id: str) -> ForgetReply:
        """The run was canceled: drop its place in the wait list, or its offer."""
        now = await self._begin()
        slot = self._slots.get(run_id)
        forgotten = run_id in self._waiters
        if slot is not None and slot.offer:
            await self._free(run_id, unstart=True)
            forgotten = True
        await self._drop_waiter(run_id)
        woken = await self._fill(now)
        await self._commit(now)
        await self._wake(woken)
        return {"forgotten": forgotten}

    async def expire_slots(self, granted_before_ms: int, run_ids: list[str]) -> ExpireSlotsReply:
        """Free now the slots of `run_ids` held under leases granted before
        `granted_before_ms`, whose holders are known to be gone, and give the capacity on.
        Only a host that knows every earlier holder dead may call it (the embedded runtime
        at its start, as `CoordinatorActor.expire_lease`): a slot's token is its run's lease
        token, which starts from the time of the grant, so a slot taken since is left alone.
        The host names the runs that will not take their slot over with a new attempt (a
        run canceled while it ran), which would otherwise keep it until its lease ran out."""
        now = await self._begin()
        expired = []
        for run_id in sorted(set(run_ids)):
            slot = self._slots.get(run_id)
            if slot is not None and not slot.offer and slot.token < granted_before_ms:
                await self._free(run_id)
                expired.append(run_id)
        woken = await self._fill(now) if expired else []
        await self._commit(now)
        await self._wake(woken)
        return {"expired": expired}

    async def waiting(self, run_ids: list[str]) -> WaitingReply:
        """Which of `run_ids` wait in line (no slot, no offer): their coordinators are parked
        and this limiter will wake or hand them over, so reconciliation need not ask them."""
        await self._begin()
        waiting = [r for r in run_ids if r in self._waiters and r not in self._slots]
        return {"waiting": waiting, "paused": self._meta.paused}

    async def pause(self, paused: bool) -> PauseReply:
        """The job was paused (or resumed): while paused nothing is granted or offered, so
        its waiting runs stay in line, parked, instead of each being delivered to find the
        job paused; on resume the capacity goes to them in the wait order."""
        now = await self._begin()
        woken: list[str] = []
        if self._meta.paused != paused:
            self._meta.paused = paused
            self._meta_dirty = True
            if not paused:
                woken = await self._fill(now)
        await self._commit(now)
        await self._wake(woken)
        return {"paused": paused}

    async def status(self) -> LimiterStatus:
        await self._begin()
        return {
            "held": sorted(r for r, s in self._slots.items() if not s.offer),
            "offered": sorted(r for r, s in self._slots.items() if s.offer),
            "waiting": len(self._queue),
        }

    async def alarm(self) -> bool:
        """Expire slots and offers, fill freed capacity. False if this object holds no
        limiter (the alarm belongs to a coordinator)."""
        self._alarm = None  # it has fired
        now = await self._begin()
        if self._meta.limits is None and not self._slots and not self._waiters:
            return False
        woken = await self._fill(now)
        await self._commit(now)
        await self._wake(woken)
        return True

    # --- the order ---------------------------------------------------------------------------

    async def _fill(
        self,
        now: int,
        claimant: tuple[str, int, int, bool] | None = None,
        *,
        handoffs: int = 0,
    ) -> list[str]:
        """Give capacity to waiters in order: the claimant (the caller of `acquire`) a slot,
        the others an offer. Returns the run ids to wake. The first `handoffs` offers go to
        the caller of `release`, who claims them within moments: they are kept in memory
        only and not counted against `max_offers` (if this object restarts first, the runs
        are still in the stored line, and their claims wait or are granted as newcomers')."""
        woken: list[str] = []
        while (run_id := pick(self._limits, self._meta, self._slots, self._queue, now)) is not None:
            waiter = self._waiters[run_id]
            self._queue.remove(run_id, waiter)
            placed = False  # an offer made at a delivery: kept in memory only
            if claimant is not None and claimant[0] == run_id:
                _, token, lease_ms, stored = claimant
                slot = Slot(waiter.key, token, now + lease_ms, start=now)
                placed = not token
                await self._drop_waiter(run_id, stored=stored)
                await self._put_slot(run_id, slot)  # (an offer at a delivery: memory only)
            else:
                slot = Slot(waiter.key, 0, now + self._config.offer_ms, start=now)
                if len(woken) >= handoffs:  # a woken waiter's offer is stored
                    waiter.offers += 1
                    await self._storage.put(WAIT_PREFIX + run_id, waiter.to_storage())
                    await self._storage.put(SLOT_PREFIX + run_id, slot.to_storage())
                woken.append(run_id)
            self._slots[run_id] = slot
            if record_start(self._limits, self._meta, waiter.key, now) and not placed:
                # (A placed offer's start is kept in memory only too, unless another change
                # writes the record: its claim moves the start to its own time and writes it
                # then, and a restart before decides the claim afresh: a row less a run.)
                self._meta_dirty = True
        return woken

    # --- records ----------------------------------------------------------------------------

    async def _begin(self) -> int:
        """Load once, then expire what has run out; returns now (epoch ms)."""
        if not self._loaded:
            await self._load()
        now = int(self._clock.now() * 1000)
        for run_id, slot in list(self._slots.items()):
            if slot.expires > now:
                continue
            await self._free(run_id, unstart=slot.offer)  # a dead holder, or an unclaimed offer
            waiter = self._waiters.get(run_id)
            if waiter is not None and slot.offer:
                if waiter.offers >= self._config.max_offers:
                    await self._drop_waiter(run_id)
                else:
                    self._queue.add(run_id, waiter)  # back in its place
        if prune_windows(self._limits, self._meta, now):
            self._meta_dirty = True
        return now

    async def _load(self) -> None:
        meta = await self._storage.get(META_KEY)
        self._meta = Meta() if meta is None else Meta.from_storage(meta)
        self._limits = _parse(self._meta.limits)
        slots = await self._storage.list({"prefix": SLOT_PREFIX})
        for k, v in dict(slots).items():
            self._slots[k.removeprefix(SLOT_PREFIX)] = Slot.from_storage(v)
        waits = await self._storage.list({"prefix": WAIT_PREFIX})
        for k, v in dict(waits).items():
            run_id, waiter = k.removeprefix(WAIT_PREFIX), Waiter.from_storage(v)
            self._waiters[run_id] = waiter
            if run_id not in self._slots:
                self._queue.add(run_id, waiter)
        alarm = await self._storage.getAlarm()
        self._alarm = None if alarm is None else int(alarm)
        self._loaded = True

    async def _free(self, run_id: str, *, unstart: bool = False) -> None:
        slot = self._slots.pop(run_id)
        await self._storage.delete(SLOT_PREFIX + run_id)
        if unstart and slot.start is not None:  # an offer never claimed: it did not start
            for starts in (self._meta.starts, self._meta.key_starts.get(slot.key, [])):
                if slot.start in starts:
                    starts.remove(slot.start)
            self._meta_dirty = True

    async def _drop_waiter(self, run_id: str, *, stored: bool = True) -> None:
        """`stored`: whether its record was written (a newcomer granted at once was not)."""
        waiter = self._waiters.pop(run_id, None)
        if waiter is not None:
            self._queue.remove(run_id, waiter)
            if stored:
                await self._storage.delete(WAIT_PREFIX + run_id)

    async def _put_slot(self, run_id: str, slot: Slot) -> None:
        # An offer to a run being delivered (`acquire` with token 0, at its delivery) is
        # claimed within moments: kept in memory only. Should this object restart first,
        # the claim is decided afresh (granted if the order allows, else the run waits), so
        # the limit never admits more for it; a woken waiter's offer is stored (see _fill).
        if slot.offer:
            return
        await self._storage.put(SLOT_PREFIX + run_id, slot.to_storage())

    async def _commit(self, now: int) -> None:
        """Write the meta record if it changed and aim the alarm at the next thing to check:
        the earliest expiry, or the opening of a rate window that holds a waiter back."""
        if self._meta_dirty:
            await self._storage.put(META_KEY, self._meta.to_storage())
            self._meta_dirty = False
        # An alarm set already that comes no later serves (it finds nothing due and re-aims),
        # and one no longer needed is left to fire once: either costs less than a row written.
        alarm = next_check(self._limits, self._meta, self._slots, self._queue, now)
        if alarm is None or (self._alarm is not None and self._alarm <= alarm):
            return
        await self._storage.setAlarm(alarm)
        self._alarm = alarm

    async def _wake(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            # A failed wake costs nothing lasting: the offer expires and is made again.
            with contextlib.suppress(Exception):
                await self._waker.wake(run_id)


async def _answers(calls: list[asyncio.Future[LeaseReply] | None]) -> list[LeaseReply | None]:
    """The leases' replies, None for each call that failed."""
    grants: list[LeaseReply | None] = []
    for call in calls:
        try:
            grants.append(None if call is None else await call)
        except Exception:
            grants.append(None)
    return grants


def _parse(message: LimitsMessage | None) -> Limits:
    return Limits() if message is None else Limits.from_message(message)
