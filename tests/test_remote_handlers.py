"""Remote handlers on the embedded bindings: job names routed by `KUMOFIRE_REMOTE_HANDLERS` to
another Worker run in-process behind a service binding (`local.services`), on the manual
clock. The same routes through the Cloudflare adapter are in tests/cloudflare."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from kumofire_jobs import (
    CreateRequest,
    JobContext,
    NonRetryableError,
    RemoteHandlersError,
    RetryPolicy,
    UnknownJobError,
    create_runtime,
)
from kumofire_jobs.cloudflare.remote import (
    REMOTE_HANDLERS_VAR,
    RemoteRoute,
    is_non_retryable,
    parse_routes,
    remote_children,
    remote_run,
)
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.environment import LocalEnvironment, WranglerSettings
from kumofire_jobs.local.services import (
    JsDict,
    LocalServiceBinding,
    ServiceBindingError,
    python_error_text,
)

ROUTES = {"notify": {"binding": "HANDLERS", "method": "run_job"}}
WIRE_KEYS = {
    "id", "name", "status", "payload", "attempt", "max_attempts", "scheduled_for",
    "created_at", "updated_at", "started_at", "finished_at", "last_error", "dedupe_key",
    "schedule_id", "priority", "concurrency_key", "timeout", "parent_id", "progress", "result",
}  # fmt: skip


class Remote:
    """The target Worker's side: what it received, and how it answers (its first
    `fail_attempts` attempts raise `error(attempt)`; `block` makes every call wait)."""

    def __init__(
        self,
        fail_attempts: int = 0,
        error: Callable[[int], Exception] = lambda n: RuntimeError(f"upstream timeout ({n})"),
    ) -> None:
        self.fail_attempts = fail_attempts
        self.error = error
        self.runs: list[Any] = []
        self.instances: list[Any] = []
        self.block: asyncio.Event | None = None
        self.cancelled = False
        self.answer: Callable[[Any], Any] = lambda run: {"ok": True, "run": run["id"]}

    def entrypoint(self) -> type:
        remote = self

        class Handlers:
            """A WorkerEntrypoint as workerd builds it: `Handlers(ctx, env)` per call."""

            def __init__(self, ctx: Any, env: Any) -> None:
                self.ctx = ctx
                self.env = env

            async def run_job(self, run: Any) -> Any:
                remote.runs.append(run)
                remote.instances.append(self)
                if remote.block is not None:
                    try:
                        await remote.block.wait()
                    except asyncio.CancelledError:
                        remote.cancelled = True
                        raise
                if run["attempt"] <= remote.fail_attempts:
                    raise remote.error(run["attempt"])
                return remote.answer(run)

        return Handlers


async def local_job(ctx: JobContext) -> None:
    pass


RemoteEnvFactory = Callable[..., Awaitable[LocalEnvironment]]


@pytest.fixture
async def make_env(clock: ManualClock, data_dir: Path) -> AsyncIterator[RemoteEnvFactory]:
    """`await make_env(remote, handlers=..., routes=..., **create_runtime_options)`: a started
    environment whose `HANDLERS` service binding is `remote`'s entrypoint."""
    made: list[LocalEnvironment] = []

    async def make(
        remote: Remote,
        *,
        handlers: Mapping[str, Any] | None = None,
        routes: Any = ROUTES,
        **options: Any,
    ) -> LocalEnvironment:
        runtime = create_runtime(handlers or {"local": local_job}, clock=clock, **options)
        env = LocalEnvironment(
            runtime,
            data_dir / f"env{len(made)}",
            settings=WranglerSettings(vars={REMOTE_HANDLERS_VAR: routes}),
            services={"HANDLERS": LocalServiceBinding(remote.entrypoint(), name="HANDLERS")},
        )
        made.append(env)
        await env.start()
        return env

    yield make
    for env in made:
        await env.stop(drain_seconds=0)


# --- runs through a remote handler ------------------------------------------------------------


async def test_a_remote_route_runs_the_run_in_the_target_worker(
    make_env: RemoteEnvFactory, clock: ManualClock
) -> None:
    remote = Remote()
    env = await make_env(remote)
    created = await env.jobs.create("notify", {"to": "a@example.com"}, dedupe_key="n1")
    await clock.advance(0)

    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and (run.status, run.attempt) == ("succeeded", 1)
    [received] = remote.runs
    # The run as the HTTP API answers it, as it is while the attempt runs, arrived as the SDK
    # presents an RPC argument: a dict with attribute access.
    assert isinstance(received, JsDict) and set(received) == WIRE_KEYS | {"children"}
    assert received["children"] == []  # not a flow's parent
    assert received.payload == {"to": "a@example.com"}
    assert (received["id"], received["name"], received["status"]) == (run.id, "notify", "running")
    assert (received["attempt"], received["max_attempts"]) == (1, 3)
    assert received["started_at"] == "2027-01-01T00:00:00.000Z"
    assert (received["finished_at"], received["last_error"]) == (None, None)
    assert received["dedupe_key"] == "n1"
    typed = remote_run(received)
    assert typed.id == run.id and typed.started_at == run.started_at
    # What the target returned is the run's result, as a local handler's return value is.
    assert run.result == {"ok": True, "run": run.id}
    # Built as workerd builds an entrypoint: (ctx, env), its env not the service's.
    [target] = remote.instances
    assert callable(target.ctx.waitUntil)
    with pytest.raises(AttributeError, match="no bindings or vars of its own"):
        _ = target.env.JOBS_DB


async def test_a_remote_flow_parent_gets_its_children_and_returns_its_result(
    make_env: RemoteEnvFactory, clock: ManualClock
) -> None:
    """As a local parent's handler sees `ctx.children` and returns its result (API.md Part 2,
    "Flows"), a remote one gets the children with the run and its answer is the result."""

    async def part(ctx: JobContext) -> dict[str, Any]:
        return {"region": ctx.job.payload}

    remote = Remote()
    remote.answer = lambda run: {"parts": [child["result"] for child in run["children"]]}
    env = await make_env(remote, handlers={"part": part})
    flow = await env.jobs.create_flow(
        CreateRequest(name="notify"),
        [CreateRequest(name="part", payload=region) for region in ("eu", "us")],
    )
    await clock.advance(0)
    await clock.advance(0)
    parent = await env.jobs.get(flow.parent_id)
    assert parent is not None and parent.status == "succeeded"
    assert parent.result == {"parts": [{"region": "eu"}, {"region": "us"}]}
    [received] = remote.runs
    children = remote_children(received)
    assert [child.id for child in children] == flow.children
    assert [(c.status.value, c.result) for c in children] == [
        ("succeeded", {"region": "eu"}),
        ("succeeded", {"region": "us"}),
    ]


async def test_a_remote_answer_that_cannot_be_a_result_fails_the_run_without_a_retry(
    make_env: RemoteEnvFactory, clock: ManualClock
) -> None:
    remote = Remote()
    remote.answer = lambda run: "x" * 70_000  # over the 64 KiB a result may hold
    env = await make_env(remote)
    created = await env.jobs.create("notify")
    await clock.advance(0)
    run = await env.jobs.get(created.kumofire_job_run_id)
    assert run is not None and (run.status, run.attempt, run.result) == ("failed", 1, None)
    assert run.last_error is not None and "the handler's return value" in run.last_error
    assert len(remote.runs) == 1


async def test_a_remote_exception_is_retried_then_succeeds(
    make_env: RemoteEnvFactory, clock: ManualClock
) -> None:
    remote = Remote(fail_attempts=1)
    env = await make_env(remote, retry=RetryPolicy(base_delay=2.0))
    run_id = (await env.jobs.create("notify")).kumofire_job_run_id
    await clock.advance(0)
    run = await env.jobs.get(run_id)
    assert run is not None and (run.status, run.attempt) == ("scheduled", 1)
    error = "RemoteHandlerError: HANDLERS.run_job: RuntimeError: upstream timeout (1)"
    assert run.last_error == error
    await clock.advance(1.999)
    assert len(remote.runs) == 1
    await clock.advance(0.001)
    run = await env.jobs.get(run_id)
    assert run is not None and (run.status, run.attempt) == ("succeeded", 2)
    # The second attempt saw the first one's error.
    assert [(r["attempt"], r["last_error"]) for r in remote.runs] == [(1, None), (2, error)]
    assert len(remote.instances) == 2 and remote.instances[0] is not remote.instances[1]


async def test_a_remote_that_keeps_failing_exhausts_its_attempts(
    make_env: RemoteEnvFactory, clock: ManualClock
) -> None:
    env = await make_env(Remote(fail_attempts=99), retry=RetryPolicy(max_attempts=2))
    run_id = (await env.jobs.create("notify")).kumofire_job_run_id
    await clock.advance(0)
    await clock.advance(1)
    run = await env.jobs.get(run_id)
    assert run is not None and (run.status, run.attempt) == ("failed", 2)
    assert (
        run.last_error == "RemoteHandlerError: HANDLERS.run_job: RuntimeError: upstream timeout (2)"
    )


NON_RETRYABLE: list[tuple[Callable[[int], Exception], str]] = [
    (lambda n: NonRetryableError("bad"), "kumofire_jobs.core.errors.NonRetryableError: bad"),
    (lambda n: ValueError("non_retryable: bad"), "ValueError: non_retryable: bad"),
]


@pytest.mark.parametrize(("error", "last_line"), NON_RETRYABLE, ids=["type", "prefix"])
async def test_a_non_retryable_remote_error_fails_the_run_at_once(
    make_env: RemoteEnvFactory,
    clock: ManualClock,
    error: Callable[[int], Exception],
    last_line: str,
) -> None:
    env = await make_env(Remote(fail_attempts=1, error=error))
    run_id = (await env.jobs.create("notify")).kumofire_job_run_id
    await clock.advance(0)
    run = await env.jobs.get(run_id)
    assert run is not None and (run.status, run.attempt) == ("failed", 1)
    assert run.last_error == f"NonRetryableError: HANDLERS.run_job: {last_line}"


async def test_a_method_the_target_lacks_is_a_failed_attempt(
    make_env: RemoteEnvFactory, clock: ManualClock
) -> None:
    routes = {"notify": {"binding": "HANDLERS", "method": "missing"}}
    env = await make_env(Remote(), routes=routes, retry=RetryPolicy(max_attempts=1))
    run_id = (await env.jobs.create("notify")).kumofire_job_run_id
    await clock.advance(0)
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "failed"
    assert run.last_error == (
        "RemoteHandlerError: HANDLERS.missing: The RPC receiver does not implement the method "
        '"missing".'
    )


async def test_canceling_a_run_stops_waiting_for_its_remote_handler(
    make_env: RemoteEnvFactory, clock: ManualClock
) -> None:
    remote = Remote()
    remote.block = asyncio.Event()
    env = await make_env(remote, lease_seconds=3.0)
    run_id = (await env.jobs.create("notify")).kumofire_job_run_id
    await clock.advance(0)
    assert len(remote.runs) == 1
    await env.jobs.cancel(run_id)
    await clock.advance(1)  # the background renewal sees the cancel
    run = await env.jobs.get(run_id)
    assert run is not None and run.status == "canceled"
    # As on the platform, the other Worker's invocation runs on; the environment's end stops it.
    assert not remote.cancelled
    await env.stop(drain_seconds=0)
    assert remote.cancelled


# --- remote job names are job names -----------------------------------------------------------


async def test_create_and_schedules_accept_remote_names_and_still_reject_unknown_ones(
    make_env: RemoteEnvFactory, clock: ManualClock
) -> None:
    remote = Remote()
    env = await make_env(remote)
    created = await env.jobs.create_many(
        [CreateRequest(name="notify"), CreateRequest(name="local")]
    )
    assert len(created) == 2
    with pytest.raises(UnknownJobError, match="'nope'"):
        await env.jobs.create("nope")
    schedule = await env.jobs.create_schedule("notify", {"tick": 1}, every=5)
    with pytest.raises(UnknownJobError):
        await env.jobs.create_schedule("nope", every=5)
    await clock.advance(5)
    assert [r["payload"] for r in remote.runs] == [None, {"tick": 1}]
    assert remote.runs[1]["schedule_id"] == schedule.id


async def test_a_job_both_registered_and_routed_is_refused(
    clock: ManualClock, tmp_path: Path
) -> None:
    runtime = create_runtime({"notify": local_job}, clock=clock)
    with pytest.raises(RemoteHandlersError, match=r"job 'notify' has a handler registered"):
        LocalEnvironment(
            runtime,
            tmp_path / "data",
            settings=WranglerSettings(vars={REMOTE_HANDLERS_VAR: ROUTES}),
            services={"HANDLERS": LocalServiceBinding(Remote().entrypoint(), name="HANDLERS")},
        )
    assert not (tmp_path / "data").exists()  # refused before anything was opened


async def test_a_route_to_a_binding_not_running_names_the_service_flag(
    clock: ManualClock, tmp_path: Path
) -> None:
    settings = WranglerSettings(
        vars={REMOTE_HANDLERS_VAR: ROUTES},
        services={"HANDLERS": {"binding": "HANDLERS", "entrypoint": "Handlers"}},
    )
    with pytest.raises(RemoteHandlersError) as raised:
        LocalEnvironment(create_runtime({}, clock=clock), tmp_path / "data", settings=settings)
    assert str(raised.value) == (
        "KUMOFIRE_REMOTE_HANDLERS routes job 'notify' to the service binding 'HANDLERS', which "
        "is not running: run that Worker in-process with --service HANDLERS=MODULE:Handlers"
    )


def test_wrangler_settings_read_vars_and_services() -> None:
    settings = WranglerSettings.from_config(
        {
            "vars": {"GREETING": "hi", REMOTE_HANDLERS_VAR: ROUTES},
            "services": [{"binding": "HANDLERS", "service": "h", "entrypoint": "Handlers"}],
        }
    )
    assert settings.vars == {"GREETING": "hi", REMOTE_HANDLERS_VAR: ROUTES}
    assert settings.services == {
        "HANDLERS": {"binding": "HANDLERS", "service": "h", "entrypoint": "Handlers"}
    }
    assert (WranglerSettings().vars, WranglerSettings().services) == ({}, {})


# --- the routing var --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        ROUTES,
        '{"notify": {"binding": "HANDLERS", "method": "run_job"}}',
        {"notify": {"binding": "HANDLERS"}},  # method defaults to run_job
    ],
    ids=["object", "json-text", "default-method"],
)
def test_routes_parse_from_an_object_or_its_json(value: Any) -> None:
    assert parse_routes(value) == {"notify": RemoteRoute("notify", "HANDLERS", "run_job")}


@pytest.mark.parametrize("value", [None, "", "  "])
def test_no_routes(value: Any) -> None:
    assert parse_routes(value) == {}


NOT_A_METHOD = ".method must be the name of a public RPC method"
BAD_ROUTES: list[tuple[str, Any, str]] = [
    ("not json", "{notify: 1}", "KUMOFIRE_REMOTE_HANDLERS is not valid JSON"),
    ("array", "[1]", "must be an object from job name to"),
    ("number", 3, "not a number"),
    ("route not object", {"notify": "H"}, "KUMOFIRE_REMOTE_HANDLERS['notify'] must be an object"),
    ("unknown field", {"notify": {"binding": "H", "timeout": 5}}, "unknown field(s): timeout"),
    ("no binding", {"notify": {"method": "run"}}, "['notify'].binding must be the name of a"),
    ("bad binding", {"notify": {"binding": "MY BINDING"}}, ".binding must be"),
    ("private method", {"notify": {"binding": "H", "method": "_run"}}, NOT_A_METHOD),
    ("method not text", {"notify": {"binding": "H", "method": 1}}, NOT_A_METHOD),
    ("fetch", {"notify": {"binding": "H", "method": "fetch"}}, "'fetch' is not an RPC method"),
    ("empty name", {"": {"binding": "H"}}, "job names must be non-empty strings"),
    ("long name", {"n" * 257: {"binding": "H"}}, "longer than 256 characters"),
    ("slash in name", {"team/notify": {"binding": "H"}}, "must not contain '/'"),
]


@pytest.mark.parametrize(
    ("value", "message"), [c[1:] for c in BAD_ROUTES], ids=[c[0] for c in BAD_ROUTES]
)
def test_bad_routes_are_refused_saying_why(value: Any, message: str) -> None:
    with pytest.raises(RemoteHandlersError) as raised:
        parse_routes(value)
    assert message in str(raised.value)


async def test_a_bad_route_in_the_environment_is_refused(
    clock: ManualClock, tmp_path: Path
) -> None:
    settings = WranglerSettings(vars={REMOTE_HANDLERS_VAR: {"notify": {"binding": 7}}})
    with pytest.raises(RemoteHandlersError, match="binding must be"):
        LocalEnvironment(create_runtime({}, clock=clock), tmp_path / "data", settings=settings)


# --- what counts as non-retryable -------------------------------------------------------------


class JsLikeError(Exception):
    """A JavaScript error as Pyodide raises it: `name` and `message`."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def traceback_of(exc: Exception) -> str:
    try:
        raise exc
    except Exception as raised:
        return python_error_text(raised)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (JsLikeError("Error", "non_retryable: bad input"), True),
        (JsLikeError("Error", traceback_of(NonRetryableError("bad"))), True),
        (JsLikeError("Error", traceback_of(ValueError("non_retryable: bad"))), True),
        (JsLikeError("PythonError", "PythonError: " + traceback_of(NonRetryableError("x"))), True),
        (JsLikeError("Error", "Traceback (most recent call last):\n  File ...\n"
                     "workers.workflows.NonRetryableError: x"), True),
        (JsLikeError("NonRetryableError", "anything"), True),
        (ServiceBindingError("Error", traceback_of(NonRetryableError("bad"))), True),
        (RuntimeError("non_retryable: raised on this side"), True),
        (JsLikeError("Error", "upstream timeout"), False),
        (JsLikeError("Error", traceback_of(RuntimeError("boom"))), False),
        (JsLikeError("Error", "not non_retryable: in the middle"), False),
        (JsLikeError("Error", "PythonError"), False),  # the traceback lost on the way
        (RuntimeError(), False),
    ],
)  # fmt: skip
def test_which_remote_errors_are_non_retryable(error: Exception, expected: bool) -> None:
    assert is_non_retryable(error) is expected


# --- the in-process service binding -----------------------------------------------------------


class Echo:
    made = 0
    gate: asyncio.Event

    def __init__(self, ctx: Any, env: Any) -> None:
        Echo.made += 1
        self.ctx = ctx

    async def echo(self, *args: Any) -> Any:
        return list(args)

    async def mutate(self, value: Any) -> Any:
        value["changed"] = True
        return value

    async def fail(self) -> None:
        raise ValueError("the target failed")

    async def later(self, done: Any) -> str:
        async def work() -> None:
            await Echo.gate.wait()
            Echo.made += 100

        self.ctx.waitUntil(work())
        return "answered"

    def plain(self, value: Any) -> Any:  # a non-async method answers too
        return {"value": value}

    def _private(self) -> None:
        pass


async def test_rpc_arguments_and_answers_are_structured_clones() -> None:
    binding = LocalServiceBinding(Echo, name="ECHO")
    sent = {"a": [1, (2, 3)], "b": b"\x00\x01", "c": None}
    [arrived] = await binding.echo(sent)
    assert isinstance(arrived, JsDict) and arrived.a == [1, [2, 3]]
    assert bytes(arrived["b"]) == b"\x00\x01" and arrived.c is None
    answer = await binding.mutate(sent)
    assert answer == {**sent, "a": [1, [2, 3]], "b": memoryview(b"\x00\x01"), "changed": True}
    assert "changed" not in sent  # the target had a copy
    assert await binding.plain(1) == {"value": 1}
    assert binding.calls == 3


@pytest.mark.parametrize("value", [{1, 2}, object(), {1: "int key"}])
async def test_what_a_structured_clone_refuses_is_refused_at_the_call(value: Any) -> None:
    binding = LocalServiceBinding(Echo, name="ECHO")
    with pytest.raises(ServiceBindingError) as raised:
        binding.echo(value)
    assert raised.value.name == "DataCloneError"
    assert binding.calls == 0


async def test_rpc_is_positional_only_and_public_methods_only() -> None:
    binding = LocalServiceBinding(Echo, name="ECHO")
    with pytest.raises(TypeError, match="positional arguments only"):
        binding.echo(value=1)
    with pytest.raises(ServiceBindingError, match='does not implement the method "nope"') as raised:
        await binding.nope()
    assert raised.value.name == "TypeError"
    with pytest.raises(AttributeError):
        _ = binding._private
    with pytest.raises(AttributeError, match="RPC method calls only"):
        _ = binding.fetch


async def test_an_exception_in_the_target_arrives_as_its_traceback() -> None:
    binding = LocalServiceBinding(Echo, name="ECHO")
    with pytest.raises(ServiceBindingError) as raised:
        await binding.fail()
    error = raised.value
    assert error.name == "Error" and error.remote
    assert error.message.startswith("Traceback (most recent call last):")
    assert error.message.rstrip().endswith("ValueError: the target failed")
    assert "services.py" not in error.message  # it starts in the target's code


async def test_an_entrypoint_that_cannot_be_built_fails_the_call() -> None:
    class Broken:
        def __init__(self, ctx: Any, env: Any) -> None:
            raise RuntimeError("no config")

        async def run(self) -> None:
            pass

    with pytest.raises(ServiceBindingError) as raised:
        await LocalServiceBinding(Broken, name="BROKEN").run()
    assert raised.value.message.rstrip().endswith("RuntimeError: no config")


async def test_each_call_builds_the_entrypoint_and_runs_on_its_own() -> None:
    Echo.made = 0
    Echo.gate = asyncio.Event()
    binding = LocalServiceBinding(Echo, name="ECHO")
    pending = binding.later(None)  # sent when made, not when awaited
    await asyncio.sleep(0)
    assert Echo.made == 1
    assert await pending == "answered"
    Echo.gate.set()
    await asyncio.sleep(0)
    assert Echo.made == 101  # the waitUntil work went on after the answer
    await binding.echo()
    assert Echo.made == 102
    Echo.gate = asyncio.Event()
    assert await binding.later(None) == "answered"
    await binding.stop()  # cancels the waitUntil work still pending
    Echo.gate.set()
    await asyncio.sleep(0)
    assert Echo.made == 103


async def test_a_caller_that_stops_waiting_does_not_stop_the_target() -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    finished: list[str] = []

    class Slow:
        def __init__(self, ctx: Any, env: Any) -> None:
            pass

        async def run(self) -> None:
            started.set()
            await release.wait()
            finished.append("done")

    binding = LocalServiceBinding(Slow, name="SLOW")
    caller = asyncio.ensure_future(binding.run())
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    release.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert finished == ["done"]
    await binding.stop()
