"""Bulk operations on runs (API.md Part 2, "Controlling runs and jobs"): `cancel_many`,
`retry_many` and `delete_many` over a filter.

One call reads at most `limit` + 1 candidate ids (oldest first, only runs in the statuses the
operation applies to) and changes each by the same guarded call as the single operation
(`RunService.cancel_with_children`, `retry`, `delete`), so a crash mid-bulk leaves every run
either changed or not, never half-changed, and a run that changed meanwhile is skipped (not
counted). Calling again goes on with what still matches. A retry changes a flow's children
before their parent, which then waits for them (`RunStore.retry`), and takes the flows'
parents after every other run (`_candidates`). `count` is every run the
call changed: a canceled flow parent's unfinished children, canceled with it, count too (so
it may exceed `limit`, which bounds the runs matched).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from .errors import ConflictError, ValidationError
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
    found = await _candidates(action, store, sorted(statuses), name, schedule_id, bound, limit)
    one = _ONE[action]
    gate = asyncio.Semaphore(_CONCURRENCY)

    async def change(run_id: str) -> int:
        async with gate:
            return await one(runs, run_id)

    taken = found[:limit]
    if action == "retry":
        # A flow's children before their parent: retried after them, the parent waits for
        # them (`RunStore.retry`) instead of running ahead of the children retried with it.
        changed = await asyncio.gather(*(change(r) for r, parent in taken if not parent))
        changed += await asyncio.gather(*(change(r) for r, parent in taken if parent))
    else:
        changed = await asyncio.gather(*(change(run_id) for run_id, _ in taken))
    has_more = len(found) > limit
    if has_more and action == "cancel":
        # The runs past `limit` may have gone with a canceled flow parent: ask again.
        has_more = bool(
            await store.ids_matching(
                sorted(statuses), name=name, schedule_id=schedule_id, id_below=bound, limit=1
            )
        )
    return BulkResult(count=sum(changed), has_more=has_more)


async def _candidates(
    action: str,
    store: RunStore,
    statuses: list[RunStatus],
    name: str | None,
    schedule_id: str | None,
    bound: str | None,
    limit: int,
) -> list[tuple[str, bool]]:
    """At most `limit` + 1 candidates, oldest first; for a retry, every other run before the
    flows' parents: a parent is older than its children, so a page cut by `limit` could take
    it without them, and, retried alone, it would run at once ahead of them. A parent in a
    retry's page has every matching child in it or retried by an earlier call."""
    if action != "retry":
        return await store.ids_matching(
            statuses, name=name, schedule_id=schedule_id, id_below=bound, limit=limit + 1
        )
    found = await store.ids_matching(
        statuses, name=name, schedule_id=schedule_id, id_below=bound, limit=limit + 1,
        parents=False,
    )  # fmt: skip
    if len(found) <= limit:
        found += await store.ids_matching(
            statuses, name=name, schedule_id=schedule_id, id_below=bound,
            limit=limit + 1 - len(found), parents=True,
        )  # fmt: skip
    return found


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
