"""The limiter's decisions as pure functions of its records: whether a key has room, which
waiter may start now (the wait order: priority, then round robin across keys), counting a
start in the rate windows, pruning them, and when next to check. `limiter.py` keeps the
records and writes them; these only read and change them in memory."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from .limiter_state import Limits, Meta, Slot, WaitQueue, Window, next_in_turn

__all__ = [
    "claim_start",
    "has_room",
    "next_check",
    "pick",
    "prune_windows",
    "rate_allows",
    "record_start",
    "stale_offers",
]


def has_room(limits: Limits, slots: Mapping[str, Slot], key: str) -> bool:
    if limits.concurrency is not None and len(slots) >= limits.concurrency:
        return False
    held = sum(1 for s in slots.values() if s.key == key)
    return limits.key_concurrency is None or held < limits.key_concurrency


def pick(
    limits: Limits, meta: Meta, slots: Mapping[str, Slot], queue: WaitQueue, now: int
) -> str | None:
    """The waiter that may start now, in the wait order, or None."""
    if meta.paused:
        return None
    if limits.concurrency is not None and len(slots) >= limits.concurrency:
        return None
    if limits.rate is not None and not limits.rate.allows(
        meta.starts, now, stale_offers(slots, limits.rate, now).total()
    ):
        return None
    if not limits.keyed and (sole := queue.sole_head()) is not None:
        return sole[2]  # one group, nothing held back per key: its head
    kc, kr = limits.key_concurrency, limits.key_rate
    held = Counter(s.key for s in slots.values()) if kc is not None else Counter[str]()
    stale = stale_offers(slots, kr, now) if kr is not None else Counter[str]()
    eligible = []
    for key, head in queue.heads():
        if kc is not None and held[key] >= kc:
            continue
        if kr is not None and not kr.allows(meta.key_starts.get(key, []), now, stale[key]):
            continue
        eligible.append((key, head))
    if not eligible:
        return None
    top = min(head[0] for _, head in eligible)
    heads = {key: head for key, head in eligible if head[0] == top}
    return heads[next_in_turn(list(heads), meta.cursor)][2]


def rate_allows(limits: Limits, meta: Meta, slots: Mapping[str, Slot], key: str, now: int) -> bool:
    """Whether the rate windows that apply take one more start of `key` now."""
    if (rate := limits.rate) is not None and not rate.allows(
        meta.starts, now, stale_offers(slots, rate, now).total()
    ):
        return False
    kr = limits.key_rate
    return kr is None or kr.allows(
        meta.key_starts.get(key, []), now, stale_offers(slots, kr, now)[key]
    )


def record_start(limits: Limits, meta: Meta, key: str, now: int) -> bool:
    """Count a start in the rate windows that apply and move the round robin on. Returns
    whether that changed `meta` (the caller writes it only then: no row for a job without
    rates)."""
    changed = False
    if limits.rate is not None:
        meta.starts.append(now)
        changed = True
    if limits.key_rate is not None:
        meta.key_starts.setdefault(key, []).append(now)
        changed = True
    if meta.cursor != key:
        meta.cursor = key
        changed = True
    return changed


def stale_offers(slots: Mapping[str, Slot], window: Window, now: int) -> Counter[str]:
    """Offers not yet claimed whose recorded start has left `window`, by key (`total()` for
    the job): the run starts at its claim, later than the offer, so until then it counts as
    starting now (a delivery slower than the window must not let a second round start beside
    it)."""
    edge = now - window.per_ms
    return Counter(
        s.key for s in slots.values() if s.offer and s.start is not None and s.start <= edge
    )


def claim_start(limits: Limits, meta: Meta, slot: Slot, now: int) -> bool:
    """An offer claimed by its run: its start is now, not when it was offered (the run was
    delivered in between), so the rate windows count the handler's start. Returns whether
    that changed `meta`."""
    if slot.start is None or (limits.rate is None and limits.key_rate is None):
        return False
    for starts in (meta.starts, meta.key_starts.get(slot.key)):
        if starts is not None and slot.start in starts:
            starts.remove(slot.start)
    slot.start = now
    if limits.rate is not None:
        meta.starts.append(now)
    if limits.key_rate is not None:
        meta.key_starts.setdefault(slot.key, []).append(now)
    return True


def prune_windows(limits: Limits, meta: Meta, now: int) -> bool:
    """Drop the start times that left the rate windows; returns whether `meta` changed."""
    if limits.rate is None and limits.key_rate is None and not meta.starts and not meta.key_starts:
        return False
    starts = [] if limits.rate is None else limits.rate.prune(meta.starts, now)
    key_starts = {}
    if limits.key_rate is not None:
        for key, ks in meta.key_starts.items():
            if kept := limits.key_rate.prune(ks, now):
                key_starts[key] = kept
    if starts != meta.starts or key_starts != meta.key_starts:
        meta.starts, meta.key_starts = starts, key_starts
        return True
    return False


def next_check(
    limits: Limits, meta: Meta, slots: Mapping[str, Slot], queue: WaitQueue, now: int
) -> int | None:
    """When the alarm should next look: the earliest expiry, or the opening of a rate window
    that holds a waiter back."""
    times = [s.expires for s in slots.values()]
    if queue:
        if (rate := limits.rate) is not None and (
            t := rate.opens(meta.starts, now, stale_offers(slots, rate, now).total())
        ):
            times.append(t)
        if (kr := limits.key_rate) is not None:
            stale = stale_offers(slots, kr, now)
            for key in queue.keys():  # noqa: SIM118  a method, not a dict
                ks = meta.key_starts.get(key, [])
                if t := kr.opens(ks, now, stale[key]):
                    times.append(t)
    return min(times, default=None)
