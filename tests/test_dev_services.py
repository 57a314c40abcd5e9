"""`kumofire-jobs dev --service BINDING=MODULE:CLASS`: the arguments, loading a Worker's
entrypoint class in-process (with the stand-in `workers` module), and the environment the dev
server builds from them and wrangler.toml's `[[services]]` and `[vars]`, on the manual clock.
The real dev server process with `--service` is in tests/test_dev_server.py."""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kumofire_jobs import JobContext, create_runtime
from kumofire_jobs.cli import _parser
from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local import workers_sdk
from kumofire_jobs.local.environment import WranglerSettings
from kumofire_jobs.local.server import dev_environment
from kumofire_jobs.local.services import ServiceSpecError, load_entrypoint, parse_service_spec

TARGET = """
from workers import WorkerEntrypoint

from helpers import shout  # a sibling module: the file's directory is its import root

CALLS = []


class Handlers(WorkerEntrypoint):
    async def run_job(self, run):
        CALLS.append((shout(run["name"]), run["attempt"], run["payload"]))
        if run["payload"] == "fail":
            raise RuntimeError("asked to fail")


NOT_A_CLASS = 1
"""

CONFIG = """
[[services]]
binding = "HANDLERS"
service = "my-handlers"
entrypoint = "Handlers"

[vars]
GREETING = "hello"

[vars.KUMOFIRE_REMOTE_HANDLERS]
notify = { binding = "HANDLERS", method = "run_job" }
"""


@pytest.fixture
def imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Leave `sys.modules` and `sys.path` as they were: loading targets changes both."""
    monkeypatch.delitem(sys.modules, "workers", raising=False)
    path = list(sys.path)
    before = set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - before:
        del sys.modules[name]


@pytest.fixture
def target(tmp_path: Path, imports: None) -> Path:
    src = tmp_path / "handler-worker" / "src"
    src.mkdir(parents=True)
    (src / "helpers.py").write_text("def shout(text):\n    return text.upper()\n")
    (src / "entry.py").write_text(TARGET)
    return src / "entry.py"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "wrangler.toml"
    path.write_text(CONFIG)
    return path


# --- the argument -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("HANDLERS=mymod:Handlers", ("HANDLERS", "mymod", "Handlers")),
        ("H=pkg.mod:Outer.Inner", ("H", "pkg.mod", "Outer.Inner")),
        ("H=workers/h/src/entry.py:Handlers", ("H", "workers/h/src/entry.py", "Handlers")),
        ("H=workers/h/src/entry.py", ("H", "workers/h/src/entry.py", None)),
        ("HANDLERS=mymod", ("HANDLERS", "mymod", None)),
        (r"H=C:\\workers\\entry.py", ("H", r"C:\\workers\\entry.py", None)),
    ],
)  # fmt: skip
def test_service_arguments_parse(text: str, parsed: tuple[str, str, str | None]) -> None:
    spec = parse_service_spec(text)
    assert (spec.binding, spec.module, spec.attribute) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("HANDLERS", "must look like BINDING=MODULE:CLASS"),
        ("=mod:Class", "must look like BINDING=MODULE:CLASS"),
        ("HANDLERS=", "must look like BINDING=MODULE:CLASS"),
        ("MY BINDING=mod:Class", "is not a binding name"),
        ("HANDLERS=mod:", "the class name after ':' is missing"),
    ],
)
def test_bad_service_arguments_say_why(text: str, message: str) -> None:
    with pytest.raises(ServiceSpecError, match=message):
        parse_service_spec(text)


def test_the_cli_takes_service_repeatedly() -> None:
    args = _parser().parse_args(["dev", "--service", "A=m:C", "--service", "B=n.py"])
    assert args.service == ["A=m:C", "B=n.py"]
    assert _parser().parse_args(["dev"]).service == []


# --- loading the class ------------------------------------------------------------------------


def test_a_class_loads_from_a_file_with_the_stand_in_sdk(target: Path) -> None:
    cls = load_entrypoint(parse_service_spec(f"HANDLERS={target}:Handlers"))
    assert cls.__name__ == "Handlers"
    assert issubclass(cls, workers_sdk.WorkerEntrypoint)
    assert sys.modules["workers"] is workers_sdk


def test_a_class_loads_from_a_module_in_the_current_directory(
    target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(target.parent)
    cls = load_entrypoint(parse_service_spec("HANDLERS=entry:Handlers"))
    assert cls.__module__ == "entry"


def test_without_a_class_the_services_entrypoint_then_default(target: Path) -> None:
    spec = parse_service_spec(f"HANDLERS={target}")
    assert load_entrypoint(spec, "Handlers").__name__ == "Handlers"
    with pytest.raises(ServiceSpecError, match="has no class 'Default'"):
        load_entrypoint(spec)


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        (":Nope", "has no class 'Nope'"),
        (":NOT_A_CLASS", "NOT_A_CLASS is a int, not a class"),
    ],
)
def test_a_missing_or_wrong_class_is_named(target: Path, suffix: str, message: str) -> None:
    with pytest.raises(ServiceSpecError, match=message):
        load_entrypoint(parse_service_spec(f"HANDLERS={target}{suffix}"))


def test_a_module_that_cannot_load_is_named(tmp_path: Path, imports: None) -> None:
    with pytest.raises(ServiceSpecError, match="no such file"):
        load_entrypoint(parse_service_spec(f"H={tmp_path / 'missing.py'}:X"))
    with pytest.raises(ServiceSpecError, match="could not import 'no_such_module_xyz'"):
        load_entrypoint(parse_service_spec("H=no_such_module_xyz:X"))
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('broken at import')\n")
    with pytest.raises(ServiceSpecError, match=r"importing .* failed: RuntimeError"):
        load_entrypoint(parse_service_spec(f"H={broken}:X"))


# --- the dev environment ----------------------------------------------------------------------


async def test_a_route_in_wrangler_toml_reaches_the_in_process_worker(
    target: Path, config: Path, clock: ManualClock, data_dir: Path
) -> None:
    settings = WranglerSettings.load(config)
    runtime = create_runtime({}, clock=clock)
    # No class given: the binding's entrypoint in wrangler.toml names it.
    env = dev_environment(runtime, data_dir, settings=settings, services=[f"HANDLERS={target}"])
    await env.start()
    try:
        ok = await env.jobs.create("notify", {"n": 1})
        failing = await env.jobs.create("notify", "fail")
        await clock.advance(0)
        calls = sys.modules[env.services["HANDLERS"].entrypoint.__module__].CALLS
        assert sorted(calls, key=str) == [("NOTIFY", 1, "fail"), ("NOTIFY", 1, {"n": 1})]
        run = await env.jobs.get(ok.kumofire_job_run_id)
        assert run is not None and run.status == "succeeded"
        run = await env.jobs.get(failing.kumofire_job_run_id)
        assert run is not None and (run.status, run.attempt) == ("scheduled", 1)
        assert run.last_error == "RemoteHandlerError: HANDLERS.run_job: RuntimeError: asked to fail"
    finally:
        await env.stop(drain_seconds=0)


async def noop(ctx: JobContext) -> None:
    pass


@pytest.mark.parametrize(
    ("services", "handlers", "message"),
    [
        ([], {}, "routes job 'notify' to the service binding 'HANDLERS', which is not running: "
                 "run that Worker in-process with --service HANDLERS=MODULE:Handlers"),
        (["HANDLERS={target}:Handlers", "HANDLERS={target}"], {}, "HANDLERS is given twice"),
        (["HANDLERS={target}:Nope"], {}, "has no class 'Nope'"),
        (["HANDLERS"], {}, "must look like BINDING=MODULE:CLASS"),
        (["HANDLERS={target}"], {"notify": noop}, "job 'notify' has a handler registered"),
    ],
    ids=["not running", "twice", "no class", "bad argument", "routed twice"],
)  # fmt: skip
def test_what_stops_the_dev_server_is_said(
    target: Path,
    config: Path,
    clock: ManualClock,
    tmp_path: Path,
    services: list[str],
    handlers: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(SystemExit) as raised:
        dev_environment(
            create_runtime(handlers, clock=clock),
            tmp_path / "data",
            settings=WranglerSettings.load(config),
            services=[s.format(target=target) for s in services],
        )
    assert message in str(raised.value)
    assert not (tmp_path / "data").exists()  # refused before anything was opened


async def test_no_services_and_no_routes(clock: ManualClock, tmp_path: Path) -> None:
    env = dev_environment(create_runtime({}, clock=clock), tmp_path / "data")
    assert env.services == {} and env.resources.remote_handlers == {}
    await env.close()


def test_the_stand_in_sdk_steps_aside_for_a_loaded_one(monkeypatch: pytest.MonkeyPatch) -> None:
    sentinel = object()
    monkeypatch.setitem(sys.modules, "workers", sentinel)
    workers_sdk.install()
    assert sys.modules["workers"] is sentinel


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "handler-worker"


async def test_the_example_handler_worker_as_its_readme_runs_it(
    imports: None, clock: ManualClock, data_dir: Path
) -> None:
    settings = WranglerSettings.load(EXAMPLE / "jobs-service.toml")
    env = dev_environment(
        create_runtime({}, clock=clock),
        data_dir,
        settings=settings,
        services=[f"HANDLERS={EXAMPLE / 'src' / 'entry.py'}:Handlers"],
    )
    await env.start()
    try:
        flaky = await env.jobs.create("notify", {"to": "a@example.com", "fail_attempts": 1})
        refused = await env.jobs.create("notify", {"to": "nobody"})
        await clock.advance(0)
        run = await env.jobs.get(flaky.kumofire_job_run_id)
        assert run is not None and (run.status, run.attempt) == ("scheduled", 1)
        assert run.last_error == (
            "RemoteHandlerError: HANDLERS.run_job: RuntimeError: the mail relay timed out "
            "(attempt 1)"
        )
        await clock.advance(1)
        run = await env.jobs.get(flaky.kumofire_job_run_id)
        assert run is not None and (run.status, run.attempt) == ("succeeded", 2)
        run = await env.jobs.get(refused.kumofire_job_run_id)
        assert run is not None and (run.status, run.attempt) == ("failed", 1)
        assert run.last_error is not None and "non_retryable: notify needs an email" in (
            run.last_error
        )
    finally:
        await env.stop(drain_seconds=0)


def test_the_example_configs() -> None:
    worker = tomllib.loads((EXAMPLE / "wrangler.toml").read_text())
    service = tomllib.loads((EXAMPLE / "jobs-service.toml").read_text())
    assert worker["main"] == "src/entry.py" and "python_workers" in worker["compatibility_flags"]
    [binding] = service["services"]
    assert binding == {
        "binding": "HANDLERS", "service": worker["name"], "entrypoint": "Handlers"
    }  # fmt: skip
    routes = service["vars"]["KUMOFIRE_REMOTE_HANDLERS"]
    assert routes == {"notify": {"binding": "HANDLERS", "method": "run_job"}}
    # The repository's wrangler.toml shows the same lines, commented out.
    repo = (EXAMPLE.parents[1] / "wrangler.toml").read_text()
    assert '# [vars.KUMOFIRE_REMOTE_HANDLERS]\n# notify = { binding = "HANDLERS"' in repo
