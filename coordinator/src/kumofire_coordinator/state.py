"""The actor's stored state: one record under one storage key.

Phases and their alarm (the one alarm of the object is always the next thing to check):

| phase       | meaning                                              | alarm at              |
|-------------|------------------------------------------------------|-----------------------|
| `armed`     | waiting for the due time; once it has passed and the | `due`; then the first |
|             | first delivery went out, waiting for a lease (that   | redelivery            |
|             | delivery writes only the alarm; status: `delivered`) |                       |
| `delivered` | redelivered; waiting for a lease                     | next redelivery       |
| `leased`    | a consumer holds the lease (`token`, `lease_expires`) | `lease_expires`, or an |
|             |                                                      | earlier alarm that    |
|             |                                                      | re-aims at it         |
| `abandoned` | redelivered `max_deliveries` times, nobody took it   | none (reconciliation) |

Each storage write is a billed row on the platform, so the common path writes few: arming
(state and alarm), the first delivery (alarm), the lease (state; its alarm is the pending
redelivery alarm when that comes first), the close (`deleteAll`). A new key due at its arm
and delivered inline writes nothing until its lease (state and the lease's alarm).

A closed actor has no state at all: its storage is cleared and its alarm deleted. So has an
actor whose inline `arm` delivered and stored nothing: a `vacant` lease is granted on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

STATE_KEY = "coordinator"


class Phase(StrEnum):
    ARMED = "armed"
    DELIVERED = "delivered"
    LEASED = "leased"
    ABANDONED = "abandoned"


@dataclass(slots=True)
class ActorState:
    key: str
    due: int  # epoch ms
    phase: Phase = Phase.ARMED
    version: int = 0  # bumped by every change; compare-and-set across awaits
    deliveries: int = 0  # deliveries since the last arm or lease grant
    token: int = 0  # the last fencing token granted (monotonic for this key)
    lease_expires: int | None = None  # epoch ms, while leased
    canceled: bool = False
    pending_due: int | None = None  # armed again while leased: applies when the lease ends
    # The arm's note for the hook (opaque here): given back with the first delivery after
    # that arm; cleared by a lease or a deferral.
    note: str | None = None

    def lease_live(self, now: int) -> bool:
        return (
            self.phase is Phase.LEASED
            and self.lease_expires is not None
            and now < self.lease_expires
        )

    def to_storage(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "due": self.due,
            "phase": self.phase.value,
            "version": self.version,
            "deliveries": self.deliveries,
            "token": self.token,
            "lease_expires": self.lease_expires,
            "canceled": self.canceled,
            "pending_due": self.pending_due,
            "note": self.note,
        }

    @classmethod
    def from_storage(cls, data: dict[str, Any]) -> ActorState:
        return cls(**{**data, "phase": Phase(data["phase"])})
