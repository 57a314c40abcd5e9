"""Bulk operations on runs (API.md Part 2, "Controlling runs and jobs"): `cancel_many`,
`retry_many` and `delete_many` over a filter.

One call reads at most `limit` + 1 candidate ids (oldest first, only runs in the statuses the
operation applies to) and changes each by the same guarded call as the single operation
(`RunService.cancel_with_children`, `retry`, `delete`), so a crash mid-bulk leaves every run
either changed or not, never half-changed, and a run that changed meanwhile is skipped (not
counted). Calling again goes on with what still matches. A retry changes a flow's children
before their parent, which then waits for them (`RunStore.retry`), and a retried parent takes
its matching children with it (`_retry_plan`). `count` is every run the call changed: a flow
parent's children canceled with it count too (so it may exceed `limit`, which bounds the runs
matched); a retry keeps to `limit` but for one flow larger than it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from .errors import ConflictError, ValidationError
from .flows import MAX_CHILDREN
from .ids import run_ids_before
from .models import BulkResult
from .runs import RunService
from .states import RETRYABLE_BY_HAND, TERMINAL, UNFINISHED, RunStatus
from .store import RunStore
from .times import datetime_to_ms
from .validation import integer

MAX_BULK_LIMIT = 1000
_CONCURRENCY = 16

# The statuses each operation can change.
APPLIES_TO: dict[str, frozenset[RunStatus]] = {
    "cancel": UNFINISHED,  # a flow's waiting parent too (its children go with it)
    "retry": RETRYABLE_BY_HAND,
    "delete": TERMINAL,
}


def _check_filter(
    status: Any, name: Any, schedule_id: Any, created_before: Any, limit: Any
) -> tuple[RunStatus | None, str | None, int]:
    """The filter's status, the id bound of `created_before` and the limit; ValidationError
    if bad."""
    if status is None and name is None and schedule_id is None and created_before is None:
        raise ValidationError("give at least one of status, name, schedule_id, created_before")
    limit = integer("limit", limit)
    if not 1 <= limit <= MAX_BULK_LIMIT:
        raise ValidationError(f"limit must be between 1 and {MAX_BULK_LIMIT}")
    for field, value in (("name", name), ("schedule_id", schedule_id)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValidationError(f"{field} must be a non-empty string")
    parsed: RunStatus | None = None
    if status is not None:
        try:
            parsed = RunStatus(status)
        except ValueError:
            statuses = ", ".join(s.value for s in RunStatus)
            raise ValidationError(f"status must be one of: {statuses}") from None
    bound: str | None = None
    if created_before is not None:
        if not isinstance(created_before, datetime):
            raise ValidationError("created_before must be a timezone-aware datetime")
        try:
            bound = run_ids_before(datetime_to_ms(created_before))
        except ValueError as exc:
            raise ValidationError(f"created_before: {exc}") from None
    return parsed, bound, limit


async def bulk(
    action: str,
    *,
    runs: RunService,
    store: RunStore,
    status: Any,
    name: Any,
    schedule_id: Any,
    created_before: Any,
    limit: Any,
) -> BulkResult:
    parsed, bound, limit = _check_filter(status, name, schedule_id, created_before, limit)
    statuses = APPLIES_TO[action] if parsed is None else APPLIES_TO[action] & {parsed}
    found = await store.ids_matching(
        sorted(statuses), name=name, schedule_id=schedule_id, id_below=bound, limit=limit + 1
    )
    one = _ONE[action]
    gate = asyncio.Semaphore(_CONCURRENCY)

    async def change(run_id: str) -> int:
        async with gate:
            return await one(runs, run_id)

    taken = found[:limit]
    cut = False
    if action == "retry":
        # A flow's children go first: retried after them, the parent waits for them
        # (`RunStore.retry`) instead of running ahead of them.
        matching = functools.partial(
            store.ids_matching, sorted(statuses), name=name, schedule_id=schedule_id,
            id_below=bound,
        )  # fmt: skip
        children, parents, cut = await _retry_plan(taken, matching, limit)
        changed = await asyncio.gather(*(change(r) for r in children))
        changed += await asyncio.gather(*(change(r) for r in parents))
    else:
        changed = await asyncio.gather(*(change(run_id) for run_id, _ in taken))
    has_more = cut or len(found) > limit
    if has_more and action in ("cancel", "retry"):
        # The runs past `limit` may have gone with a flow parent: ask again.
        has_more = bool(await store.ids_matching(
            sorted(statuses), name=name, schedule_id=schedule_id, id_below=bound, limit=1
        ))  # fmt: skip
    return BulkResult(count=sum(changed), has_more=has_more)


async def _retry_plan(
    taken: list[tuple[str, bool]],
    matching: Callable[..., Awaitable[list[tuple[str, bool]]]],
    limit: int,
) -> tuple[list[str], list[str], bool]:
    """The runs a bulk retry changes, oldest first: the children (and runs outside a flow),
    then the parents, and whether it stopped short of `taken`. A parent's matching children
    come with it, in the same call (past `taken` too: else the parent ran ahead of them), and
    count toward `limit`; a parent whose flow no longer fits waits for the next call, unless
    it is the call's first (one flow may exceed a small `limit`, as a bulk cancel's does)."""
    children: dict[str, None] = {}
    parents: list[str] = []
    for run_id, is_parent in taken:
        if len(children) + len(parents) >= limit:
            return list(children), parents, True
        if not is_parent:
            children[run_id] = None
            continue
        kids = [r for r, _ in await matching(limit=MAX_CHILDREN, parent_id=run_id)]
        new = [r for r in kids if r not in children]
        if (children or parents) and len(children) + len(parents) + len(new) + 1 > limit:
            return list(children), parents, True
        children.update(dict.fromkeys(new))
        parents.append(run_id)
    return list(children), parents, False


async def _cancel(runs: RunService, run_id: str) -> int:
    # Every run the cancel changed: a flow parent's unfinished children count too.
    return len(await runs.cancel_with_children(run_id))


async def _retry(runs: RunService, run_id: str) -> int:
    try:
        return int(await runs.retry(run_id) is not None)
    except ConflictError:  # it changed since it was read
        return 0


async def _delete(runs: RunService, run_id: str) -> int:
    try:
        return int(await runs.delete(run_id))
    except ConflictError:  # retried since it was read
        return 0


_ONE: dict[str, Callable[[RunService, str], Awaitable[int]]] = {
    "cancel": _cancel,
    "retry": _retry,
    "delete": _delete,
}
