"""Run statuses and the one table of transitions every guarded update follows.

| from        | to          | by                                                        |
|-------------|-------------|-----------------------------------------------------------|
| (new)       | scheduled   | create (a flow's children too)                            |
| (new)       | waiting     | create_flow: the parent, until every child has finished   |
| waiting     | scheduled   | the last child's finish (or reconciliation): the release  |
| scheduled   | queued      | the coordinator's delivery hook, once due                 |
| scheduled   | running     | consume (a message delivered before `queued` was written) |
| queued      | running     | consume, holding the lease                                |
| running     | running     | consume after the last holder's lease expired (a crash)   |
| running     | succeeded   | the handler returned                                      |
| running     | scheduled   | the handler raised with attempts left (a retry)           |
| running     | failed      | attempts exhausted, NonRetryableError, no handler         |
| waiting, scheduled, queued, running | canceled | cancel (a parent's cascades)       |
| failed, canceled | scheduled | manual retry                                         |
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    WAITING = "waiting"  # a flow's parent, until each of its children has finished
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class ConsumeOutcome(StrEnum):
    IGNORED = "ignored"
    SUCCEEDED = "succeeded"
    RETRIED = "retried"
    FAILED = "failed"
    CANCELED = "canceled"
    TIMED_OUT = "timed_out"  # the job's timeout stopped the attempt (retried or failed)


class AttemptOutcome(StrEnum):
    """How one attempt ended, as its run's history records it."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    CANCELED = "canceled"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"  # its consumer died: seen when its lease was taken over


ALL_STATUSES: tuple[RunStatus, ...] = tuple(RunStatus)
ACTIVE: frozenset[RunStatus] = frozenset({RunStatus.SCHEDULED, RunStatus.QUEUED, RunStatus.RUNNING})
# Not finished: `finished_at IS NULL` holds for exactly these (a waiting parent too).
UNFINISHED: frozenset[RunStatus] = ACTIVE | {RunStatus.WAITING}
TERMINAL: frozenset[RunStatus] = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELED}
)
RETRYABLE_BY_HAND: frozenset[RunStatus] = frozenset({RunStatus.FAILED, RunStatus.CANCELED})


def sql_list(statuses: frozenset[RunStatus]) -> str:
    """`'a', 'b'` for an SQL `IN (...)`: constants only, never user input."""
    return ", ".join(f"'{s.value}'" for s in sorted(statuses))
