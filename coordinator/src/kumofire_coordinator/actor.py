"""The per-run coordinator actor: timing as an alarm, one lease at a time, redelivery.

One actor per key (a run id), living in a Durable Object. It knows nothing of D1 or of job
semantics: the jobs layer plugs in a `DeliveryHook` that hands the key to the queue, and
consumers ask the actor for a lease before they run anything.

Every method reads the state, changes it and writes it back without awaiting anything but
storage, so the Durable Object's input gate makes each of them atomic. The exceptions are the
alarm and an `arm` for a key already due, which await the delivery hook (a queue send, a D1
write): other calls run meanwhile, so afterwards they change the state only if its stored
version is still the one read before the send (compare-and-set). A failed or interrupted
delivery leaves the state as it was, and the platform retries the alarm. An inline `arm`
of a new key stores nothing unless its send fails (then the state and a retry alarm); one
of a key with a state stores a fallback alarm before it delivers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from .messages import (
    ArmReply,
    CancelReply,
    CloseReply,
    ExpireReply,
    LeaseReply,
    ReleaseReply,
    RenewReply,
    StatusReply,
)
from .state import STATE_KEY, ActorState, Phase
from .storage import ActorStorage


class Clock(Protocol):
    def now(self) -> float:
        """Unix epoch seconds."""
        ...


class DeliveryAction(StrEnum):
    SENT = "sent"  # handed to the queue: wait for a lease, redeliver if none comes
    CLOSE = "close"  # nothing left to deliver (finished, canceled or missing): close
    DEFER = "defer"  # not due yet after all: arm again for `due_ms`


@dataclass(frozen=True, slots=True)
class Delivery:
    action: DeliveryAction
    due_ms: int | None = None


class DeliveryHook(Protocol):
    async def deliver(self, key: str, delivery: int, note: str | None = None) -> Delivery:
        """Hand `key` to whoever will ask for its lease; `delivery` counts from 1. `note` is
        what the last `arm` carried (opaque to the actor), given only with the first delivery
        after that arm: the caller may have done part of the delivery's work already."""
        ...


# An `arm` whose inline delivery failed has its alarm try again this soon, as the platform
# retries a failed alarm (its first retry comes after 2 s).
INLINE_RETRY_MS = 2_000


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    """Redelivery timing: if no consumer takes the lease, deliver again after
    `redeliver_initial * 2 ** (n - 1)` seconds (at most `redeliver_max`), and give up after
    `max_deliveries` deliveries, leaving the key to reconciliation."""

    redeliver_initial: float = 10.0
    redeliver_max: float = 300.0
    max_deliveries: int = 10

    def redelivery_delay_ms(self, deliveries: int) -> int:
        delay = min(self.redeliver_initial * 2 ** max(deliveries - 1, 0), self.redeliver_max)
        return int(delay * 1000)


class CoordinatorActor:
    def __init__(
        self,
        storage: ActorStorage,
        clock: Clock,
        hook: DeliveryHook,
        config: CoordinatorConfig | None = None,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._hook = hook
        self._config = config or CoordinatorConfig()
        # This instance's storage writes so far: an inline arm that stored nothing before
        # its send compares it afterwards (no stored version to compare).
        self._changes = 0
        # Keys whose unstored inline arm awaits its delivery here: an early lease of one is
        # granted, as if the state had been stored first (see `lease`).
        self._delivering: set[str] = set()

    # --- calls from the jobs layer ----------------------------------------------------------

    async def arm(
        self, key: str, due_ms: int, note: str | None = None, inline: bool = False
    ) -> ArmReply:
        """Own `key`, due at `due_ms`; the alarm delivers it then (at once if already due).
        With `inline`, a key already due is delivered within this call instead, before the
        reply: no alarm run for it. `note` goes to the hook with the first delivery after
        this arm.

        A live lease is never displaced: the due time waits until the holder releases."""
        now = self._now_ms()
        due_ms = max(due_ms, now)  # a past due time means now (see alarm())
        state = await self._load()
        if state is not None and state.key == key and state.lease_live(now):
            state.pending_due = due_ms
            state.canceled = False
            await self._save(state, alarm_ms=state.lease_expires)
            return {"armed": False, "reason": "leased"}
        if state is None and inline and due_ms <= now:
            return await self._arm_inline_unstored(key, due_ms, note)
        if state is None or state.key != key:
            state = ActorState(key=key, due=due_ms, token=state.token if state else 0)
        state.due = due_ms
        state.phase = Phase.ARMED
        state.deliveries = 0
        state.lease_expires = None
        state.canceled = False
        state.pending_due = None
        state.note = note
        if due_ms > now or not inline:
            await self._save(state, alarm_ms=due_ms)
            return {"armed": True}
        # Due, and this object already held a state: deliver now rather than through an
        # alarm set for now (a Durable Object request less). The state is stored first with
        # the first redelivery's alarm as the fallback: if this object dies before or during
        # the delivery, that alarm delivers (counted as a redelivery); if the delivery goes
        # out, it already is the redelivery alarm, so the delivery writes nothing more.
        await self._save(state, alarm_ms=self._redelivery_at(1))
        try:
            await self._deliver(state, 0, inline=True)
        except Exception as exc:
            return {"armed": True, "delivery_error": str(exc) or type(exc).__name__}
        return {"armed": True}

    async def _arm_inline_unstored(self, key: str, due_ms: int, note: str | None) -> ArmReply:
        """An inline arm of a due key on an object holding nothing (a run just created):
        deliver first and store nothing if the message went out. Storage rows are money,
        and once the queue holds the message its own retries, then reconciliation (the
        run is unfinished and overdue, its actor `closed`), deliver it again if no lease
        comes; the consumer's lease is granted on an empty object (`lease`) and stores the
        state with the lease's alarm. Only a failed send, or a deferral, stores the state:
        its alarm delivers again. A lease or a cancel that came while the send was awaited
        stands (`_changes`: this instance's count of its own writes)."""
        state = ActorState(key=key, due=due_ms, note=note)
        seen = self._changes
        self._delivering.add(key)
        try:
            result = await self._hook.deliver(key, 1, note)
        except Exception as exc:
            if self._changes == seen and await self._load() is None:
                # The alarm tries again soon, still as the first delivery after the arm.
                await self._save(state, alarm_ms=self._now_ms() + INLINE_RETRY_MS)
            return {"armed": True, "delivery_error": str(exc) or type(exc).__name__}
        finally:
            self._delivering.discard(key)
        if (
            result.action is DeliveryAction.DEFER
            and result.due_ms is not None
            and self._changes == seen
            and await self._load() is None
        ):
            state.due, state.note = result.due_ms, None
            await self._save(state, alarm_ms=result.due_ms)
        # SENT: the queue holds the message; CLOSE: nothing is stored to clear.
        return {"armed": True}

    async def lease(
        self,
        key: str,
        lease_ms: int,
        early: bool = False,
        vacant: bool = False,
        token: int = 0,
    ) -> LeaseReply:
        """Grant the lease to one caller: never before the due time (unless `early`), never
        while another caller's lease is live. The token fences the holder's writes elsewhere.

        `early` is for a run its job's limiter handed to a consumer: it was due when it
        joined the limiter's line, and its coordinator is parked until a fallback time. The
        limiter names the `token` it expects (a time: it wrote the run's slot under it before
        asking, see `LimiterActor.release_many`); the grant's is that, or the next token if
        this coordinator has granted one as high.

        `vacant`: grant on an object that holds nothing too, as one delivered by an inline
        `arm` that stored nothing (`_arm_inline_unstored`) does; otherwise such an object
        answers `closed`. Only for a caller whose own store fences what it starts under the
        token (the jobs layer's guarded `running` update: a finished, canceled or not yet
        due run does not start, and its holder closes or re-arms this actor), and never on
        an object another actor uses (a limiter's). An early lease is granted on an empty
        object only while its unstored inline arm awaits the hook: a limited run the hook
        put in its limiter's line can be handed over before the hook's deferral is stored."""
        now = self._now_ms()
        state = await self._load()
        if state is None and (key in self._delivering if early else vacant):
            state = ActorState(key=key, due=now)
        if state is None or state.key != key:
            return {"granted": False, "reason": "closed"}
        if state.canceled:
            return {"granted": False, "reason": "canceled"}
        if state.pending_due is not None and not state.lease_live(now):
            # Armed again while the last holder had the lease, and that lease has ended.
            state.due, state.pending_due = max(state.pending_due, now), None
            state.phase = Phase.ARMED
            state.lease_expires = None
            await self._save(state, alarm_ms=state.due)
        if now < state.due and not early:
            return {"granted": False, "reason": "not_due", "due_ms": state.due}
        if state.lease_live(now):
            return {"granted": False, "reason": "held"}
        # An early lease makes the key due now: if its holder dies, it is delivered again.
        state.due = min(state.due, now)
        state.note = None  # the next delivery follows a lease: the hook must look for itself
        # Tokens only grow, even across a close that cleared storage: they start from the time
        # (the limiter's, for a token it names).
        state.token = max(state.token + 1, token or now)
        state.phase = Phase.LEASED
        state.lease_expires = now + lease_ms
        state.deliveries = 0
        await self._save_lease(state)
        return {"granted": True, "token": state.token, "expires_ms": state.lease_expires}

    async def renew(self, token: int, lease_ms: int) -> RenewReply:
        """Extend the holder's lease; tells a holder whose run was canceled or whose lease was
        lost (expired and given to someone else)."""
        state = await self._load()
        if state is None or state.token != token or state.phase is not Phase.LEASED:
            return {"ok": False, "reason": "lost"}
        if state.canceled:
            return {"ok": False, "reason": "canceled"}
        state.lease_expires = self._now_ms() + lease_ms
        await self._save_lease(state)
        return {"ok": True, "expires_ms": state.lease_expires}

    async def release(self, token: int, rearm_ms: int | None = None) -> ReleaseReply:
        """The holder is done: close (terminal), or arm again at `rearm_ms` (a retry). A due
        time armed while the lease was held wins over both."""
        state = await self._load()
        if state is None or state.token != token or state.phase is not Phase.LEASED:
            return {"ok": False, "reason": "lost"}
        if state.pending_due is not None:
            rearm_ms = state.pending_due
        elif state.canceled:
            rearm_ms = None
        if rearm_ms is None:
            await self.close()
            return {"ok": True, "closed": True}
        state.phase = Phase.ARMED
        state.due = max(rearm_ms, self._now_ms())
        state.lease_expires = None
        state.pending_due = None
        state.deliveries = 0
        await self._save(state, alarm_ms=rearm_ms)
        return {"ok": True, "closed": False}

    async def cancel(self) -> CancelReply:
        """Stop delivering. A live lease stays until its holder learns of the cancel (renew)
        and releases, or until it expires."""
        state = await self._load()
        if state is not None and state.lease_live(self._now_ms()):
            state.canceled = True
            state.pending_due = None
            await self._save(state, alarm_ms=state.lease_expires)
            return {"canceled": True, "leased": True}
        await self.close()
        return {"canceled": True, "leased": False}

    async def expire_lease(self, granted_before_ms: int) -> ExpireReply:
        """End now a live lease granted before `granted_before_ms`, whose holder is known to
        be gone: the alarm then delivers again at once (or closes, after a cancel), as when
        a lease runs out. Only a host that knows every earlier holder dead may call it: the
        embedded runtime at its start, its data directory locked by its one process. A
        lease granted since holds a token of at least that time (tokens start from the time
        of the grant) and is left alone."""
        now = self._now_ms()
        state = await self._load()
        if state is None or not state.lease_live(now) or state.token >= granted_before_ms:
            return {"expired": False}
        state.lease_expires = now
        await self._save(state, alarm_ms=now)
        return {"expired": True}

    async def close(self) -> CloseReply:
        """Forget the key: no alarm, no storage (`deleteAll` deletes the alarm too, from
        compatibility date 2026-02-24)."""
        self._changes += 1
        await self._storage.deleteAll()
        return {"closed": True}

    async def status(self) -> StatusReply:
        """What the actor knows, for reconciliation (asked, not guessed)."""
        state = await self._load()
        if state is None:
            return {"phase": "closed", "lease_live": False}
        now = self._now_ms()
        delivered = state.phase is Phase.ARMED and now >= state.due  # see alarm()
        phase = Phase.DELIVERED if delivered else state.phase
        return {
            "key": state.key,
            "phase": phase.value,
            "due_ms": state.due,
            "deliveries": max(state.deliveries, 1) if delivered else state.deliveries,
            "lease_live": state.lease_live(now),
            "lease_expires_ms": state.lease_expires,
            "canceled": state.canceled,
        }

    # --- the alarm --------------------------------------------------------------------------

    async def alarm(self) -> bool:
        """False if there is no coordinator state (closed, or the object is a limiter)."""
        state = await self._load()
        if state is None:
            return False
        await self._alarm(state)
        return True

    async def _alarm(self, state: ActorState) -> None:
        now = self._now_ms()
        if state.phase is Phase.ABANDONED:
            return
        if state.phase is Phase.LEASED:
            if state.lease_expires is not None and now < state.lease_expires:
                await self._storage.setAlarm(state.lease_expires)  # renewed since it was set
                return
            if state.pending_due is not None:  # armed while leased: the holder died first
                state.due, state.pending_due = max(state.pending_due, now), None
                if now < state.due:
                    state.phase = Phase.ARMED
                    state.lease_expires = None
                    await self._save(state, alarm_ms=state.due)
                    return
            elif state.canceled:  # the holder died after a cancel: nothing left to deliver
                await self.close()
                return
            # The holder died (no renew, no release): deliver again so another can take over.
        elif state.phase is Phase.ARMED and now < state.due:
            await self._storage.setAlarm(state.due)
            return
        deliveries = state.deliveries
        if state.phase is Phase.ARMED and now >= state.due + self._config.redelivery_delay_ms(1):
            # An armed actor's first delivery records nothing but the redelivery alarm (see
            # below); an alarm this long after the due time follows such a delivery. (Due
            # times are never in the past when set, so only an alarm that itself came this
            # late, after downtime, is counted one delivery too many: that costs nothing but
            # one of the deliveries before giving up.)
            deliveries = max(deliveries, 1)
        if deliveries >= self._config.max_deliveries:
            state.phase = Phase.ABANDONED
            await self._save(state, alarm_ms=None)
            return
        await self._deliver(state, deliveries)

    async def _deliver(self, state: ActorState, deliveries: int, *, inline: bool = False) -> None:
        """Deliver first, record it after: the send does not wait for a storage commit (the
        output gate holds outgoing I/O until pending writes are durable). A crash during the
        send is covered by the alarm: the platform retries an alarm whose handler did not
        finish, and an inline delivery (`arm`) stored its fallback alarm first. A call that
        runs meanwhile (a lease, most often) bumps the version, and then its state stands."""
        seen, changes = state.version, self._changes
        delivery = deliveries + 1
        first = delivery == 1 and state.phase is Phase.ARMED
        try:
            result = await self._hook.deliver(state.key, delivery, state.note if first else None)
        except Exception:
            current = await self._load()
            if current is not None and current.version == seen and self._changes == changes:
                if inline:
                    # The alarm tries again soon, still as the first delivery after the arm.
                    await self._storage.setAlarm(self._now_ms() + INLINE_RETRY_MS)
                else:
                    # The send or the D1 write failed: record the attempt and aim at the next
                    # redelivery, so that an outage counts towards giving up (and
                    # reconciliation) instead of outlasting the platform's few retries of a
                    # failed alarm.
                    await self._record_delivery(current, delivery)
            raise

        current = await self._load()
        # A state stored afresh after a close (a vacant lease's) counts its version from the
        # start again: this instance's count of its writes tells it changed all the same.
        if current is None or current.version != seen or self._changes != changes:
            return  # leased, released, armed or closed meanwhile: that state stands
        if result.action is DeliveryAction.CLOSE:
            await self.close()
        elif result.action is DeliveryAction.DEFER and result.due_ms is not None:
            current.phase = Phase.ARMED
            current.due = result.due_ms
            current.deliveries = 0
            current.note = None
            await self._save(current, alarm_ms=result.due_ms)
        elif first and current.phase is Phase.ARMED:
            # The first delivery of an armed actor: only the redelivery alarm is written (one
            # storage row, not two; none inline: `arm` set it before delivering). The state
            # stays `armed` with its due time passed, which status() reports as `delivered`.
            if not inline:
                await self._storage.setAlarm(self._redelivery_at(delivery))
        else:
            await self._record_delivery(current, delivery)

    def _redelivery_at(self, delivery: int) -> int:
        return self._now_ms() + self._config.redelivery_delay_ms(delivery)

    async def _record_delivery(self, state: ActorState, delivery: int) -> None:
        """`delivery` went out (or failed): wait for a lease until the next redelivery."""
        state.deliveries = delivery
        state.phase = Phase.DELIVERED
        state.lease_expires = None
        await self._save(state, alarm_ms=self._redelivery_at(delivery))

    # --- storage ----------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock.now() * 1000)

    async def _load(self) -> ActorState | None:
        data = await self._storage.get(STATE_KEY)
        return None if data is None else ActorState.from_storage(data)

    async def _save_lease(self, state: ActorState) -> None:
        """Store a granted or renewed lease. Its alarm must come by the lease's expiry, and
        an alarm set already that comes no later (the redelivery alarm, usually) serves: it
        finds the lease live and re-aims at the expiry. That saves a storage row per lease."""
        assert state.lease_expires is not None
        alarm = await self._storage.getAlarm()
        if alarm is not None and alarm <= state.lease_expires:
            self._changes += 1
            state.version += 1
            await self._storage.put(STATE_KEY, state.to_storage())
        else:
            await self._save(state, alarm_ms=state.lease_expires)

    async def _save(self, state: ActorState, *, alarm_ms: int | None) -> None:
        self._changes += 1
        state.version += 1
        await self._storage.put(STATE_KEY, state.to_storage())
        if alarm_ms is None:
            await self._storage.deleteAlarm()
        else:
            await self._storage.setAlarm(alarm_ms)
