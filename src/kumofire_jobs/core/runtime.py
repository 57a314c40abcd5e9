"""The runtime: handlers and policies, bound to platform resources on demand. It is the
composition root: binding resources builds the stores, the coordinator client and the
services (runs, schedules, consume, delivery), each given its collaborators explicitly.

```python
runtime = create_runtime(handlers={"email": send_email})
jobs = runtime.bind(Resources(db=env.JOBS_DB, queue=env.JOBS_QUEUE,
                              coordinator=env.JOB_COORDINATOR))
```
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kumofire_coordinator import CoordinatorActor, CoordinatorConfig, LimiterActor, LimiterStorage
from kumofire_coordinator.messages import LimitsMessage
from kumofire_coordinator.storage import ActorStorage

from . import handoff
from .answers import BeforeAnswer, runtime_work
from .bindings import D1Database, DurableObjectNamespace, MessageBatch, Queue
from .clock import Clock, SystemClock
from .consume import Consumer, describe_error
from .consumer_batch import SEAT, ConsumerBatch
from .context import Handler, check_handlers
from .coordination import Coordinators
from .delivery import QueueDeliveryHook
from .errors import ConfigurationError, MalformedMessageError, RemoteHandlersError
from .flow_store import FlowStore
from .flows import FlowService
from .ids import IdFactory
from .job_control import JobService
from .jobs import Jobs
from .limits import CoordinatorWaker, Limits, limits_message
from .log import get_logger
from .models import ConsumeResult, DispatchResult
from .options import JobOptions, JobPolicies, check_job_options
from .reconcile import DEFAULT_GRACE_SECONDS
from .retry import RetryPolicy
from .runs import RunService
from .schedule_store import ScheduleStore
from .schedules import ScheduleService
from .schema_gate import SchemaGate
from .states import ConsumeOutcome
from .store import RunStore

log = get_logger()

DEFAULT_LEASE_SECONDS = 30.0
_BOUND_CACHE = 16
DEFAULT_RETENTION_SECONDS = 7 * 86_400.0
# A message the runtime could not consume (D1 or a coordinator failing) comes back after 2 s,
# doubling with its attempts up to a minute: an immediate retry would meet the same failure.
CONSUME_RETRY_START_SECONDS = 2
CONSUME_RETRY_MAX_SECONDS = 60

# The binding names this project's wrangler.toml declares.
DB_BINDING = "JOBS_DB"
QUEUE_BINDING = "JOBS_QUEUE"
COORDINATOR_BINDING = "JOB_COORDINATOR"


@dataclass(frozen=True, slots=True)
class Resources:
    """The binding objects themselves: a D1 database, a Queue producer, and the
    coordinator's Durable Object namespace. `remote_handlers` are handlers that come with
    these bindings, in addition to the runtime's own: the routes of jobs to other Workers
    through service bindings (`kumofire_jobs.remote`); a job name may not be in both."""

    db: D1Database
    queue: Queue
    coordinator: DurableObjectNamespace
    remote_handlers: Mapping[str, Handler] = field(default_factory=dict)
    # False: `create` answers once its runs are in D1 and their arms are sent, without
    # waiting for the coordinators' answers (the embedded runtime: its arms cannot outlive
    # the process, and it re-arms unfinished runs at every start). A Worker waits: work left
    # behind its response may never run.
    wait_for_arms: bool = True

    @classmethod
    def from_env(cls, env: Any) -> Resources:
        """Pick this project's bindings (`JOBS_DB`, `JOBS_QUEUE`, `JOB_COORDINATOR`)."""
        return cls(
            db=getattr(env, DB_BINDING),
            queue=getattr(env, QUEUE_BINDING),
            coordinator=getattr(env, COORDINATOR_BINDING),
        )


@dataclass(slots=True)
class BoundResources:
    """What a runtime assembles per resources: the jobs API over its services, and the
    delivery hook every coordinator object bound to them shares (built on first use)."""

    resources: Resources
    store: RunStore
    schedules: ScheduleService
    consumer: Consumer
    jobs: Jobs
    limits: Limits
    delivery_hook: QueueDeliveryHook | None = None


class Runtime:
    def __init__(
        self,
        *,
        handlers: Mapping[str, Handler],
        retry: RetryPolicy,
        lease_seconds: float,
        clock: Clock,
        retention_seconds: float | None,
        reconcile_grace_seconds: float,
        coordinator_config: CoordinatorConfig,
        job_options: Mapping[str, JobOptions] | None = None,
    ) -> None:
        if lease_seconds <= 0:
            raise ConfigurationError("lease_seconds must be positive")
        check_handlers(handlers)
        self.handlers = dict(handlers)
        self.retry = retry
        self.policies = JobPolicies(retry, check_job_options(job_options or {}, self.handlers))
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.retention_seconds = retention_seconds
        self.reconcile_grace_seconds = reconcile_grace_seconds
        self.coordinator_config = coordinator_config
        self.ids = IdFactory()
        self._bound: dict[tuple[int, int, int], BoundResources] = {}

    def _bind(self, resources: Resources) -> BoundResources:
        key = (id(resources.db), id(resources.queue), id(resources.coordinator))
        bound = self._bound.get(key)
        if bound is None or bound.resources != resources:
            if len(self._bound) >= _BOUND_CACHE:  # bindings made per request: keep it bounded
                self._bound.pop(next(iter(self._bound)))
            bound = self._assemble(resources)
            self._bound[key] = bound
        return bound

    def _assemble(self, resources: Resources) -> BoundResources:
        handlers = self.handlers_with(resources.remote_handlers)
        store = RunStore(resources.db)
        coordinators = Coordinators(resources.coordinator, wait_for_arms=resources.wait_for_arms)
        schedules = ScheduleService(
            db=resources.db,
            store=ScheduleStore(resources.db),
            runs=store,
            coordinators=coordinators,
            clock=self.clock,
            ids=self.ids,
            handlers=handlers,
            job_defaults=self.policies.defaults,
            reconcile_grace_seconds=self.reconcile_grace_seconds,
        )
        limits = Limits(
            resources.coordinator, self.job_limits(), self.clock, int(self.lease_seconds * 1000)
        )
        flows = FlowService(
            store=store, flows=FlowStore(resources.db), coordinators=coordinators,
            clock=self.clock,
        )  # fmt: skip
        runs = RunService(
            store=store,
            coordinators=coordinators,
            clock=self.clock,
            ids=self.ids,
            handlers=handlers,
            policies=self.policies,
            schedules=schedules,
            flows=flows,
            reconcile_grace_seconds=self.reconcile_grace_seconds,
            retention_seconds=self.retention_seconds,
            parked=None if limits.names is None else limits.parked,
            limits=None if limits.names is None else limits,
        )
        consumer = Consumer(
            store=store,
            coordinators=coordinators,
            handlers=handlers,
            policies=self.policies,
            lease_seconds=self.lease_seconds,
            clock=self.clock,
            flows=flows,
            limits=limits,
        )
        job_service = JobService(
            db=resources.db, store=store, coordinators=coordinators, clock=self.clock,
            handlers=handlers, policies=self.policies, limits=limits,
        )  # fmt: skip
        jobs = Jobs(
            runs=runs,
            schedules=schedules,
            consumer=consumer,
            schema=SchemaGate(resources.db),
            job_service=job_service,
            before_answer=_before_answer(resources),
        )
        return BoundResources(resources, store, schedules, consumer, jobs, limits)

    def handlers_with(self, remote: Mapping[str, Handler]) -> Mapping[str, Handler]:
        """The handlers by job name: the runtime's own and `remote`; a name in both raises
        `RemoteHandlersError`, a handler that is not async `TypeError`."""
        if not remote:
            return self.handlers
        check_handlers(remote)
        both = sorted(set(self.handlers) & set(remote))
        if both:
            names = ", ".join(repr(name) for name in both)
            raise RemoteHandlersError(
                f"job {names} has a handler registered in the runtime and a remote route "
                "(KUMOFIRE_REMOTE_HANDLERS): keep each job in one place"
            )
        return {**self.handlers, **remote}

    def running_handlers(self, resources: Resources) -> int:
        """How many handlers this runtime is running on `resources` now."""
        return self._bind(resources).consumer.running

    def stop_handing_over(self, resources: Resources) -> None:
        """A stopping process runs no more runs handed over (`handoff.py`): its chains end
        with the runs they hold, and each slot freed after wakes its next run instead."""
        self._bind(resources).consumer.handing_over = False

    def bind(self, resources: Resources) -> Jobs:
        return self._bind(resources).jobs

    async def dispatch_scheduled(self, resources: Resources, limit: int = 100) -> DispatchResult:
        """The cron trigger's work: reconciliation and retention."""
        with runtime_work():
            return await self.bind(resources).dispatch(limit)

    async def consume_batch(self, batch: MessageBatch, resources: Resources) -> list[ConsumeResult]:
        """Consume every message of a queue batch, concurrently; with more than one, their
        runs start in one D1 statement and their outcomes are written together
        (`consumer_batch.py`). A malformed message is acknowledged and ignored; a failure of
        the runtime itself (D1 or a coordinator unreachable, say) retries the message after
        `consume_retry_delay`. One result per message, in order."""
        bound = self._bind(resources)
        jobs, messages = bound.jobs, list(batch.messages)
        folded = None
        if len(messages) > 1:
            folded = ConsumerBatch(bound.store, self.clock, len(messages))

        async def one(message: Any) -> ConsumeResult:
            seat = None if folded is None else folded.seat()
            seated = SEAT.set(seat)  # this message (and the tasks it starts) alone
            try:
                result = await jobs.consume(message.body)
            except MalformedMessageError as exc:
                message.ack()
                log.warning("message.malformed", message_id=message.id, error=str(exc))
                return ConsumeResult(outcome=ConsumeOutcome.IGNORED, job_run_id=None)
            except Exception as exc:
                message.retry({"delaySeconds": consume_retry_delay(message.attempts)})
                log.error(
                    "message.consume_failed", message_id=message.id, error=describe_error(exc)
                )
                return ConsumeResult(outcome=ConsumeOutcome.IGNORED, job_run_id=None)
            finally:
                if seat is not None:
                    seat.leave()  # if it started nothing: the others' start need not wait
                SEAT.reset(seated)
            message.ack()
            return result

        # The runtime's own work, its handlers included (a handler's `Jobs` call still answers
        # as one from outside: answers.py); its limited runs' hand-overs share one budget.
        with runtime_work(), handoff.invocation():
            if len(messages) == 1:  # the commonest batch: no task of its own to start
                return [await one(messages[0])]
            return list(await asyncio.gather(*(one(message) for message in messages)))

    def _delivery_hook(self, resources: Resources) -> QueueDeliveryHook:
        """The hook the coordinators bound to `resources` deliver through: one for them all
        (it holds nothing per run), not one per coordinator object built."""
        bound = self._bind(resources)
        if bound.delivery_hook is None:
            bound.delivery_hook = QueueDeliveryHook(
                bound.store, resources.queue, self.clock, bound.schedules.occurrence_delivered,
                functools.partial(bound.jobs.runs.flows.settle, recovering=True),
                limits=bound.limits, on_resume_page=bound.jobs.job_service.resume_page,
            )  # fmt: skip
        return bound.delivery_hook

    def job_limits(self) -> dict[str, LimitsMessage]:
        """The limits of each job whose options set any (the others never meet a limiter)."""
        limits = {}
        for name, options in self.policies.options.items():
            message = limits_message(options)
            if message is not None:
                limits[name] = message
        return limits

    def limiter_actor(self, storage: LimiterStorage, resources: Resources) -> LimiterActor:
        """The limiter a coordinator Durable Object also serves (named `limiter:<job>`),
        waking a waiting run through that run's own coordinator."""
        waker = CoordinatorWaker(Coordinators(resources.coordinator), self.clock)
        return LimiterActor(storage, self.clock, waker)

    def coordinator_actor(self, storage: ActorStorage, resources: Resources) -> CoordinatorActor:
        """The actor a coordinator Durable Object wraps, delivering through this runtime."""
        return CoordinatorActor(
            storage, self.clock, self._delivery_hook(resources), self.coordinator_config
        )


def _before_answer(resources: Resources) -> BeforeAnswer | None:
    """What a `Jobs` call calls before it answers (`answers.py`): the sync the embedded D1
    binding offers (its one file at `FULL`), whoever made the `Resources` (the environment,
    or a Worker's `env` bound by hand); None where every commit is durable by itself (D1)."""
    offered = getattr(resources.db, "kumofire_before_answer", None)
    return offered if callable(offered) else None


def consume_retry_delay(attempts: int) -> int:
    """Seconds before a message that failed its `attempts`-th delivery is delivered again."""
    exponent = min(max(int(attempts), 1) - 1, 6)  # 2 s * 2**5 already exceeds the cap
    delay: int = CONSUME_RETRY_START_SECONDS << exponent
    return min(delay, CONSUME_RETRY_MAX_SECONDS)


def create_runtime(
    handlers: Mapping[str, Handler],
    *,
    retry: RetryPolicy | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    clock: Clock | None = None,
    retention_seconds: float | None = DEFAULT_RETENTION_SECONDS,
    reconcile_grace_seconds: float = DEFAULT_GRACE_SECONDS,
    coordinator_config: CoordinatorConfig | None = None,
    job_options: Mapping[str, JobOptions] | None = None,
) -> Runtime:
    """Build a runtime. `retention_seconds=None` keeps finished runs forever. `job_options`
    (API.md Part 2) are checked now: a name with no handler, or a value that is not a
    `JobOptions`, raises."""
    return Runtime(
        handlers=handlers,
        retry=retry or RetryPolicy(),
        lease_seconds=lease_seconds,
        clock=clock or SystemClock(),
        retention_seconds=retention_seconds,
        reconcile_grace_seconds=reconcile_grace_seconds,
        coordinator_config=coordinator_config or CoordinatorConfig(),
        job_options=job_options,
    )
