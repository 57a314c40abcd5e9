"""Around the coordinator's unstored inline arm and vacant lease (a run due at its create is
sent by its arm, which stores nothing; its consumer's lease is granted on the empty actor):
what a restart, a limiter's hand-over and a duplicate find."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import structlog

from kumofire_jobs import CreateRequest, JobContext, JobOptions, create_runtime
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.core.log import configure_logging
from kumofire_jobs.local.environment import LocalEnvironment
from tests.support.envs import EnvFactory, noop


async def test_a_restart_does_not_send_again_the_runs_whose_message_the_queue_holds(
    clock: ManualClock, tmp_path: Path
) -> None:
    """Runs sent by their create's arm wait in the stored queue when the process stops (a
    backlog). Their actors hold nothing, as they did before the stop: the start's
    reconciliation must not take that for a lost run and send each again."""
    calls: list[str] = []

    async def job(ctx: JobContext) -> None:
        calls.append(ctx.job.id)

    runtime = create_runtime({"job": job}, clock=clock)
    env = LocalEnvironment(runtime, tmp_path)
    await env.migrate()
    await env.JOB_COORDINATOR.start()  # alarms fire, the queue delivers nothing
    ids = [(await env.jobs.create("job")).kumofire_job_run_id for _ in range(3)]
    await clock.advance(0)
    await env.close()
    assert calls == []

    stream = io.StringIO()
    configure_logging(stream=stream)
    try:
        env = LocalEnvironment(runtime, tmp_path)
        await env.start()
        await clock.advance(1)
        await env.stop()
    finally:
        structlog.reset_defaults()
    assert sorted(calls) == sorted(ids)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    resent = [e for e in events if e["event"] in ("run.queued", "run.reconciled")]
    assert resent == []


async def test_a_message_naming_no_run_leaves_nothing_behind(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """A forged message (a run id D1 does not hold): its actor grants the vacant lease,
    the guarded start matches nothing, the consumer closes the actor: no state, no alarm."""
    env = await make_env({"job": noop})
    forged = "run_01MB78QN00GQ9TTMKS38JWTXZZ"
    await env.JOBS_QUEUE.send({"version": 1, "kumofireJobRunId": forged})
    await clock.advance(1)
    assert await env.jobs.get(forged) is None
    assert (await env.JOB_COORDINATOR.getByName(forged).status())["phase"] == "closed"
    assert env.JOB_COORDINATOR.alarm_of(forged) is None
    await clock.advance(600)
    assert (await env.JOB_COORDINATOR.getByName(forged).status())["phase"] == "closed"


async def test_a_message_naming_a_waiting_flow_parent_arms_nothing(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """A message naming a flow's parent still waiting for its children (forged, or left
    over): the vacant lease is granted, the start matches nothing; the parent is not
    armed for its own time (only its last child's finish arms it), and runs once, after
    its child."""
    release = asyncio.Event()
    calls: list[str] = []

    async def job(ctx: JobContext) -> None:
        calls.append(ctx.job.id)
        if ctx.job.parent_id is not None:
            await release.wait()

    env = await make_env({"job": job})
    flow = await env.jobs.create_flow(
        CreateRequest(name="job", delay=30), [CreateRequest(name="job")]
    )
    await clock.advance(0)
    await env.JOBS_QUEUE.send({"version": 1, "kumofireJobRunId": flow.parent_id})
    await clock.advance(1)
    parent = await env.jobs.get(flow.parent_id)
    assert parent is not None and parent.status == "waiting"
    assert (await env.JOB_COORDINATOR.getByName(flow.parent_id).status())["phase"] == "closed"
    assert env.JOB_COORDINATOR.alarm_of(flow.parent_id) is None
    release.set()
    await clock.advance(60)
    parent = await env.jobs.get(flow.parent_id)
    assert parent is not None and parent.status == "succeeded" and parent.attempt == 1
    assert calls.count(flow.parent_id) == 1


async def test_a_limited_run_handed_over_while_its_arm_delivers_is_not_dropped(
    make_env: EnvFactory, clock: ManualClock
) -> None:
    """Each run created here goes to the head of its job's line (a higher priority), so
    the slot a finishing run frees is handed to a run whose create's inline arm is still
    under way (placed, its deferral not yet stored). Its limiter's early lease must be
    granted then: refused (`closed`), the run left the line and waited for
    reconciliation, a minute later."""
    env = await make_env({"limited": noop}, job_options={"limited": JobOptions(concurrency=1)})
    ids = [(await env.jobs.create("limited", priority=i)).kumofire_job_run_id for i in range(30)]
    await clock.advance(1)
    for run_id in ids:
        run = await env.jobs.get(run_id)
        assert run is not None and run.status == "succeeded" and run.attempt == 1


async def test_a_backlogged_run_is_armed_again_once_not_at_every_tick(
    clock: ManualClock, tmp_path: Path
) -> None:
    """A run sent by its create's arm waits behind a stalled consumer: past the grace its
    actor, holding nothing, reads as lost and reconciliation arms it once (a second message;
    the actor's redelivery alarms take over from there, as for any delivered run). Later
    ticks find the actor holding the run and arm nothing more."""
    runtime = create_runtime({"job": noop}, clock=clock)
    env = LocalEnvironment(runtime, tmp_path)
    await env.migrate()
    await env.JOB_COORDINATOR.start()  # alarms fire, the queue delivers nothing
    await env.jobs.create("job")
    await clock.advance(0)
    assert await env.broker.depth(env.settings.queue) == 1
    await clock.advance(59)
    assert (await env.jobs.dispatch()).dispatched == 0  # within the grace
    await clock.advance(2)
    assert (await env.jobs.dispatch()).dispatched == 1
    await clock.advance(0)
    assert await env.broker.depth(env.settings.queue) == 2
    for _ in range(5):
        await clock.advance(60)
        assert (await env.jobs.dispatch()).dispatched == 0
    await env.close()
