"""The per-run coordinator actor of Kumofire Jobs.

It holds a key's due time as a Durable Object alarm, delivers the key through a hook the
jobs layer plugs in, grants at most one live lease with a fencing token, redelivers when no
consumer takes the lease or a holder dies, and closes when told the key is done.
"""

from .actor import (
    Clock,
    CoordinatorActor,
    CoordinatorConfig,
    Delivery,
    DeliveryAction,
    DeliveryHook,
)
from .endpoint import CoordinatorEndpoint
from .limiter import LimiterActor, LimiterConfig, LimiterStorage, Waker
from .messages import (
    AcquireReply,
    ArmReply,
    CancelReply,
    CloseReply,
    ExpireReply,
    ForgetReply,
    LeaseReply,
    LimiterStatus,
    LimitsMessage,
    PauseReply,
    PlacementsReply,
    ReleaseReply,
    RenewReply,
    SlotReleaseReply,
    SlotReleasesReply,
    SlotRenewReply,
    StatusReply,
    WaitingReply,
)
from .state import ActorState, Phase
from .storage import ActorStorage

__version__ = "0.1.0"

__all__ = [
    "AcquireReply",
    "ActorState",
    "ActorStorage",
    "ArmReply",
    "CancelReply",
    "Clock",
    "CloseReply",
    "CoordinatorActor",
    "CoordinatorConfig",
    "CoordinatorEndpoint",
    "Delivery",
    "DeliveryAction",
    "DeliveryHook",
    "ExpireReply",
    "ForgetReply",
    "LeaseReply",
    "LimiterActor",
    "LimiterConfig",
    "LimiterStatus",
    "LimiterStorage",
    "LimitsMessage",
    "PauseReply",
    "Phase",
    "PlacementsReply",
    "ReleaseReply",
    "RenewReply",
    "SlotReleaseReply",
    "SlotReleasesReply",
    "SlotRenewReply",
    "StatusReply",
    "WaitingReply",
    "Waker",
]
