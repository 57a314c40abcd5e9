"""The limiter's stored records, its wait order and its sliding windows.

Storage keys (each a billed row when written, so one record per thing that changes alone):

| key             | record                                                              |
|-----------------|---------------------------------------------------------------------|
| `limiter`       | `Meta`: the latest limits, the round-robin cursor, the start times  |
|                 | inside the rate windows (job-wide and per key), whether paused      |
| `slot:<run_id>` | `Slot`: a held slot (the run's lease token) or an offer (token 0)   |
| `wait:<run_id>` | `Waiter`: a run waiting for a slot                                  |
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .messages import LimitsMessage

META_KEY = "limiter"
SLOT_PREFIX = "slot:"
WAIT_PREFIX = "wait:"

# A waiter's place: higher priority first, then the earlier due time, then the run id (ids
# are time-sortable, so this is arrival order among runs due at the same time).
Order = tuple[int, int, str]


@dataclass(frozen=True, slots=True)
class Window:
    """A sliding window: at most `limit` starts in any `per_ms` (starts in `(now - per, now]`)."""

    limit: int
    per_ms: int

    def allows(self, starts: list[int], now: int, pending: int = 0) -> bool:
        """`pending`: offers not yet claimed whose recorded start left the window; each will
        start at its claim, so it counts as a start now."""
        return sum(1 for s in starts if s > now - self.per_ms) + pending < self.limit

    def opens(self, starts: list[int], now: int, pending: int = 0) -> int | None:
        """When the next start is allowed, if not now (None also while the `pending` offers
        alone fill the window: their claims or expiries look again)."""
        room = self.limit - pending
        if room <= 0:
            return None
        recent = [s for s in starts if s > now - self.per_ms]
        return None if len(recent) < room else recent[-room] + self.per_ms

    def prune(self, starts: list[int], now: int) -> list[int]:
        return [s for s in starts if s > now - self.per_ms]


@dataclass(frozen=True, slots=True)
class Limits:
    concurrency: int | None = None
    key_concurrency: int | None = None
    rate: Window | None = None
    key_rate: Window | None = None

    @classmethod
    def from_message(cls, message: LimitsMessage) -> Limits:
        rate, key_rate = message.get("rate_limit"), message.get("key_rate_limit")
        return cls(
            concurrency=message.get("concurrency"),
            key_concurrency=message.get("key_concurrency"),
            rate=None if rate is None else Window(int(rate[0]), int(rate[1])),
            key_rate=None if key_rate is None else Window(int(key_rate[0]), int(key_rate[1])),
        )

    @property
    def rated(self) -> bool:
        return self.rate is not None or self.key_rate is not None

    @property
    def keyed(self) -> bool:
        return self.key_concurrency is not None or self.key_rate is not None


@dataclass(slots=True)
class Slot:
    key: str
    token: int  # the run's lease token; 0: an offer, reserved for a woken waiter
    expires: int  # epoch ms
    start: int | None  # the start recorded in the rate windows (None: re-registered)

    @property
    def offer(self) -> bool:
        return self.token == 0

    def to_storage(self) -> dict[str, Any]:
        return {"key": self.key, "token": self.token, "expires": self.expires, "start": self.start}

    @classmethod
    def from_storage(cls, data: dict[str, Any]) -> Slot:
        return cls(**data)


@dataclass(slots=True)
class Waiter:
    key: str
    priority: int
    due: int
    offers: int = 0  # offers made and not claimed; after MAX_OFFERS the waiter is dropped

    def order(self, run_id: str) -> Order:
        return (-self.priority, self.due, run_id)

    def to_storage(self) -> dict[str, Any]:
        return {"key": self.key, "priority": self.priority, "due": self.due, "offers": self.offers}

    @classmethod
    def from_storage(cls, data: dict[str, Any]) -> Waiter:
        return cls(**data)


@dataclass(slots=True)
class Meta:
    limits: LimitsMessage | None = None
    cursor: str | None = None  # the key served last (round robin)
    starts: list[int] = field(default_factory=list)
    key_starts: dict[str, list[int]] = field(default_factory=dict)
    paused: bool = False  # the job is paused: nothing is granted, every newcomer waits

    def to_storage(self) -> dict[str, Any]:
        return {
            "limits": self.limits,
            "cursor": self.cursor,
            "starts": list(self.starts),
            "key_starts": {k: list(v) for k, v in self.key_starts.items()},
            "paused": self.paused,
        }

    @classmethod
    def from_storage(cls, data: dict[str, Any]) -> Meta:
        return cls(
            limits=data["limits"],
            cursor=data["cursor"],
            starts=list(data["starts"]),
            key_starts={k: list(v) for k, v in data["key_starts"].items()},
            paused=bool(data.get("paused", False)),
        )


class WaitQueue:
    """Waiters grouped by key, each group kept in order."""

    def __init__(self) -> None:
        self._groups: dict[str, list[Order]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, run_id: str, waiter: Waiter) -> None:
        insort(self._groups.setdefault(waiter.key, []), waiter.order(run_id))
        self._count += 1

    def remove(self, run_id: str, waiter: Waiter) -> None:
        group = self._groups.get(waiter.key)
        if group is None:
            return
        order = waiter.order(run_id)
        i = bisect_left(group, order)
        if i < len(group) and group[i] == order:
            del group[i]
            self._count -= 1
        if not group:
            del self._groups[waiter.key]

    def sole_head(self) -> Order | None:
        """The first waiter when every waiter is of one key (one group), else None."""
        if len(self._groups) != 1:
            return None
        for group in self._groups.values():
            return group[0]
        return None  # (unreachable)

    def heads(self) -> Iterator[tuple[str, Order]]:
        for key, group in self._groups.items():
            yield key, group[0]

    def keys(self) -> list[str]:
        return list(self._groups)


def next_in_turn(keys: list[str], cursor: str | None) -> str:
    """Round robin: the first key after `cursor` in key order, wrapping around."""
    ordered = sorted(keys)
    return next((k for k in ordered if cursor is None or k > cursor), ordered[0])
