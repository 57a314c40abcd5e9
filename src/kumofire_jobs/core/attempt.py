"""One attempt at a run, as consume passes it from step to step: the run as started, the
lease's token, the bound logger, the start time, the history it adds to and its journal."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .clock import Clock
from .history import attempt_record, with_attempt
from .journal import Journal
from .models import JobRun
from .run_rows import AttemptWrite
from .states import AttemptOutcome, RunStatus

__all__ = ["RECORDED", "Attempt", "EventLog"]

# The outcome an attempt's history records for the status its outcome writes.
RECORDED = {
    RunStatus.SUCCEEDED: AttemptOutcome.SUCCEEDED,
    RunStatus.FAILED: AttemptOutcome.FAILED,
    RunStatus.SCHEDULED: AttemptOutcome.RETRIED,
}


class EventLog(Protocol):
    """The bound logger an attempt's steps write to (and its handler gets as `ctx.log`)."""

    def info(self, event: str, **fields: Any) -> Any: ...

    def warning(self, event: str, **fields: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt at a run, from its `running` write to its recorded outcome: what every
    step of consume passes on (Oban's executor passes one struct the same way)."""

    run: JobRun  # as the start returned it: `attempt` counts this one
    token: int  # the lease's fencing token, the one `lease_token` the writes match
    log: EventLog  # bound to the run id, job and attempt
    started: float  # clock seconds
    started_ms: int  # the row's `started_at`, this attempt's
    attempts: str | None  # the row's `attempts` before this one (JSON text)
    journal: Journal  # the handler's log lines and progress
    children: Sequence[JobRun] = ()  # a flow's parent: its children, read at the start

    def duration_ms(self, clock: Clock) -> int:
        return round((clock.now() - self.started) * 1000)

    def history(
        self, outcome: AttemptOutcome, error: str | None, now: int, result: str | None = None
    ) -> AttemptWrite:
        """What the statement recording this attempt's outcome writes besides the status."""
        record = attempt_record(self.run.attempt, self.started_ms, now, outcome, error)
        return AttemptWrite(
            attempts=with_attempt(self.attempts, record),
            logs=self.journal.logs(),
            progress=self.journal.progress,
            result=result,
        )
