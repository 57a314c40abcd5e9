"""Flows (API.md Part 2, "Flows"): a parent run that waits (`waiting`) until each of its
children has finished, whatever the outcome, then is scheduled like any run.

- **Create.** The parent and its children go into D1 in one batch (one transaction): no crash
  leaves a parent without its children or a child without its parent. Then the children's
  coordinators are armed as `create` arms a run; a lost arm is reconciliation's, as for any
  run. The parent has no coordinator until its release.
- **Release.** When a child finishes (the consumer's outcome, a cancel, a cut-off last
  attempt), the one guarded statement `waiting -> scheduled WHERE no child is unfinished`
  (`FlowStore.release`) runs, then the parent's coordinator is armed. Of two last children
  finishing at once, each writes its own finish first, so the later statement sees both
  finished, and the statement matches once.
- **Crash points** (docs/architecture.md, "Flows"): between a child's finish and the release,
  or between the release and the arm, the child's lease is still held (the consumer releases
  it after `settle`), so the child's coordinator delivers it again, and the consumer that
  finds it finished settles its parent again (`recovering`: arms a released parent that is
  still `scheduled`). Reconciliation backs this up: it releases the waiting parents whose
  children have all finished, and re-arms a scheduled parent whose actor is closed as it
  does any run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from . import validation
from .clock import Clock, now_ms
from .coordination import Coordinators, arm_note
from .errors import ConflictError, ValidationError
from .flow_store import FlowStore
from .log import get_logger
from .models import CreatedFlow, CreateRequest, JobRun
from .run_rows import NewRun
from .states import RunStatus
from .store import RunStore

log = get_logger()

MAX_CHILDREN = validation.MAX_BATCH
# Passes of the insert: a second only when the parent's dedupe_key holder went away (pruned,
# or its dedupe_ttl ended) between the insert and the lookup, as in `create_many`.
_INSERT_PASSES = 3

NewRunFactory = Callable[[CreateRequest, int], NewRun]


class FlowService:
    def __init__(
        self, *, store: RunStore, flows: FlowStore, coordinators: Coordinators, clock: Clock
    ) -> None:
        self._store = store
        self._flows = flows
        self._coordinators = coordinators
        self._clock = clock

    async def create(
        self, parent: CreateRequest, children: Sequence[CreateRequest], new_run: NewRunFactory
    ) -> CreatedFlow:
        """Create the parent (`waiting`) and its 1 to 100 children (`scheduled`, or `queued`
        when due: `NewRun.status`), each checked
        as `create` checks a run (`new_run`), then arm the children. A parent whose
        dedupe_key is taken gives that run and its children, and creates nothing."""
        if not isinstance(children, Sequence) or isinstance(children, str | bytes):
            raise ValidationError("children must be a list of runs")
        if not 1 <= len(children) <= MAX_CHILDREN:
            raise ValidationError(f"a flow has 1 to {MAX_CHILDREN} children")
        now = now_ms(self._clock)
        # (Fields set in place: the Workers' msgspec has no `structs.replace`.)
        head = _checked(new_run, parent, now, "parent")
        head.child_count = len(children)
        kids = []
        for index, request in enumerate(children):
            if isinstance(request, CreateRequest) and request.dedupe_key is not None:
                raise ValidationError(f"children[{index}]: a flow's child takes no dedupe_key")
            kid = _checked(new_run, request, now, f"children[{index}]")
            kid.parent_id = head.id
            kids.append(kid)
        for _ in range(_INSERT_PASSES):
            inserted = await self._flows.insert(head, kids)
            if inserted or await self._store.get_row(head.id) is not None:  # or an earlier try
                await asyncio.gather(
                    *(
                        self._coordinators.arm_created(
                            kid.id, kid.scheduled_for, arm_note(kid), inline=True, job=kid.name
                        )
                        for kid in kids
                    )
                )
                log.info("flow.created", run_id=head.id, job=head.name, children=len(kids))
                return CreatedFlow(parent_id=head.id, children=[kid.id for kid in kids])
            existing = await self._store.id_by_dedupe_key(head.dedupe_key or "", now)
            if existing is not None:
                ids = [child.id for child in await self._flows.children(existing)]
                return CreatedFlow(parent_id=existing, children=ids)
        raise ConflictError("a dedupe_key kept changing hands: try again")

    async def children(self, parent_id: str) -> list[JobRun]:
        """A parent's children as they are now, oldest first (`ctx.children`)."""
        return await self._flows.children(parent_id)

    async def settle(self, parent_id: str, *, recovering: bool = False) -> bool:
        """A child of `parent_id` finished: release the parent if no child is unfinished,
        then arm its coordinator. `recovering` (the child's coordinator delivered the finished
        child again: an earlier try may have crashed after the release) also arms a parent
        released but not yet started. A failure raises: the caller's retry repeats this.
        Whether this call released the parent."""
        due = await self._flows.release(parent_id, now_ms(self._clock))
        if due is not None:
            log.info("flow.released", run_id=parent_id, scheduled_for_ms=due)
            await self._coordinators.arm(parent_id, due)
            return True
        if recovering:
            row = await self._store.get_row(parent_id)
            if row is not None and row["status"] == RunStatus.SCHEDULED and row["attempt"] == 0:
                await self._coordinators.arm(parent_id, row["scheduled_for"])  # past: now
        return False

    async def settle_logged(self, parent_id: str) -> None:
        """`settle` where the child's finish is already answered (a cancel): a failure is
        logged, and reconciliation releases or re-arms the parent."""
        try:
            await self.settle(parent_id)
        except Exception as exc:
            log.error("flow.release_failed", run_id=parent_id, error=str(exc))

    async def release_waiting(self, limit: int) -> int:
        """Reconciliation: release (and arm) the waiting parents whose children have all
        finished; how many this call released."""
        released = 0
        for parent_id in await self._flows.releasable(now_ms(self._clock), limit):
            try:
                released += await self.settle(parent_id)
            except Exception as exc:
                log.error("flow.release_failed", run_id=parent_id, error=str(exc))
        if released:
            log.warning("flow.reconciled", released=released)
        return released


def _checked(new_run: NewRunFactory, request: CreateRequest, now: int, where: str) -> NewRun:
    """`new_run(request)`, its error (of the same class: unknown_job stays unknown_job)
    saying which run of the flow it is about."""
    if not isinstance(request, CreateRequest):
        raise ValidationError(f"{where} must be a CreateRequest")
    try:
        return new_run(request, now)
    except ValidationError as exc:
        raise type(exc)(f"{where}: {exc}") from None
