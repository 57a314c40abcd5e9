"""The wrangler config validation of `cloudflare check`: each problem is named."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kumofire_jobs.deploy.config import (
    Problem,
    Severity,
    d1_database,
    default_config_path,
    load_config,
    validate_config,
)
from kumofire_jobs.deploy.wrangler import DeployError
from tests.support.deploy import REPO, ProjectFactory


def problems_of(path: Path) -> list[Problem]:
    return validate_config(load_config(path))


def errors_of(path: Path) -> list[Problem]:
    return [p for p in problems_of(path) if p.severity is Severity.ERROR]


def test_the_repository_config_passes() -> None:
    problems = problems_of(REPO / "wrangler.toml")
    assert [p for p in problems if p.severity is Severity.ERROR] == []
    # Only the database id, which a user replaces with theirs, is flagged.
    assert [p.code for p in problems] in ([], ["d1-database-id"])


def test_the_fixture_project_passes(make_project: ProjectFactory) -> None:
    assert errors_of(make_project()) == []


def _set(*path: str | int, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(config: dict[str, Any]) -> None:
        node: Any = config
        for key in path[:-1]:
            node = node[key]
        if value is _DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return change


_DELETE = object()

CASES: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("no main", _set("main", value=_DELETE), "main", "main is not set"),
    ("main absent", _set("main", value="src/app.py"), "main", "no such file"),
    ("main not python", _set("main", value="src/entry.js"), "main", "not a Python module"),
    (
        "no python_workers flag",
        _set("compatibility_flags", value=["nodejs_compat"]),
        "compatibility-flags",
        "python_workers",
    ),
    (
        "date too early",
        _set("compatibility_date", value="2025-09-28"),
        "compatibility-date",
        "gives Python 3.12 (Pyodide 0.26.0a2), an older Python",
    ),
    (
        "date too late",
        _set("compatibility_date", value="2026-08-25"),
        "compatibility-date",
        "gives Python 3.14 (Pyodide 314.0.4), a newer Python",
    ),
    ("no date", _set("compatibility_date", value=_DELETE), "compatibility-date", "not set"),
    ("bad date", _set("compatibility_date", value="soon"), "compatibility-date", "not a date"),
    (
        "no JOBS_DB",
        _set("d1_databases", 0, "binding", value="DB"),
        "d1-binding",
        "binding = 'JOBS_DB'",
    ),
    (
        "no migrations dir",
        _set("d1_databases", 0, "migrations_dir", value="schema"),
        "d1-migrations",
        "no such directory",
    ),
    (
        "no producer",
        _set("queues", "producers", 0, "binding", value="OTHER"),
        "queue-producer",
        "JOBS_QUEUE",
    ),
    (
        "consumer of another queue",
        _set("queues", "consumers", 0, "queue", value="elsewhere"),
        "queue-consumer",
        "'kumofire-jobs'",
    ),
    (
        "batch timeout",
        _set("queues", "consumers", 0, "max_batch_timeout", value=5),
        "queue-batch-timeout",
        "max_batch_timeout = 5",
    ),
    (
        "default batch timeout",
        _set("queues", "consumers", 0, "max_batch_timeout", value=_DELETE),
        "queue-batch-timeout",
        "up to 5 s",
    ),
    (
        "no max_retries",
        _set("queues", "consumers", 0, "max_retries", value=_DELETE),
        "queue-retries",
        "max_retries",
    ),
    (
        "no dead-letter queue",
        _set("queues", "consumers", 0, "dead_letter_queue", value=_DELETE),
        "queue-dead-letter",
        "no dead_letter_queue",
    ),
    (
        "dead-letter queue is the queue",
        _set("queues", "consumers", 0, "dead_letter_queue", value="kumofire-jobs"),
        "queue-dead-letter",
        "the queue itself",
    ),
    (
        "no coordinator binding",
        _set("durable_objects", "bindings", 0, "name", value="COORD"),
        "coordinator-binding",
        "JOB_COORDINATOR",
    ),
    (
        "coordinator of another script",
        _set("durable_objects", "bindings", 0, "script_name", value="other-worker"),
        "coordinator-binding",
        "remove script_name",
    ),
    (
        "key-value coordinator",
        _set("migrations", 0, value={"tag": "v1", "new_classes": ["JobCoordinator"]}),
        "coordinator-migration",
        "new_classes",
    ),
    (
        "coordinator never declared",
        _set("migrations", value=[]),
        "coordinator-migration",
        "new_sqlite_classes",
    ),
    (
        "coordinator deleted",
        _set(
            "migrations",
            value=[
                {"tag": "v1", "new_sqlite_classes": ["JobCoordinator"]},
                {"tag": "v2", "deleted_classes": ["JobCoordinator"]},
            ],
        ),
        "coordinator-migration",
        "no [[migrations]] declares",
    ),
    ("no crons", _set("triggers", value={"crons": []}), "cron-trigger", "crons"),
    ("no triggers", _set("triggers", value=_DELETE), "cron-trigger", "crons"),
]


@pytest.mark.parametrize(
    ("change", "code", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_problem_is_named(
    make_project: ProjectFactory, change: Callable[[dict[str, Any]], None], code: str, text: str
) -> None:
    errors = errors_of(make_project(change))
    assert [p.code for p in errors] == [code], errors
    assert text in errors[0].message
    assert str(errors[0]).startswith(f"error: [{code}] ")


@pytest.mark.parametrize("date", ["2025-09-29", "2026-04-20", "2026-08-24"])
def test_the_python_313_dates_are_inclusive(make_project: ProjectFactory, date: str) -> None:
    # 2025-09-29 through 2026-08-24 give Python 3.13 on the pinned workerd (1.20260820.1).
    assert errors_of(make_project(_set("compatibility_date", value=date))) == []


@pytest.mark.parametrize(
    ("date", "flags"),
    [
        ("2025-06-01", ["python_workers", "python_workers_20250116"]),
        ("2026-08-25", ["python_workers", "no_python_workers_20260610"]),
    ],
)
def test_flags_that_select_python_313_outside_its_dates_pass(
    make_project: ProjectFactory, date: str, flags: list[str]
) -> None:
    change_date = _set("compatibility_date", value=date)
    change_flags = _set("compatibility_flags", value=flags)

    def change(config: dict[str, Any]) -> None:
        change_date(config)
        change_flags(config)

    assert errors_of(make_project(change)) == []


def test_a_renamed_sqlite_coordinator_passes(make_project: ProjectFactory) -> None:
    migrations = [
        {"tag": "v1", "new_sqlite_classes": ["Coordinator"]},
        {"tag": "v2", "renamed_classes": [{"from": "Coordinator", "to": "JobCoordinator"}]},
    ]
    assert errors_of(make_project(_set("migrations", value=migrations))) == []


def test_the_coordinator_class_must_be_in_the_entry(make_project: ProjectFactory) -> None:
    errors = errors_of(make_project(entry="class Default:\n    pass\n"))
    assert [p.code for p in errors] == ["coordinator-class"]
    assert "'JobCoordinator'" in errors[0].message
    imported = "from somewhere import JobCoordinator\n"
    assert errors_of(make_project(entry=imported)) == []


def test_the_migrations_must_be_ours(make_project: ProjectFactory) -> None:
    path = make_project()
    migrations = path.parent / "migrations"
    (migrations / "0002_schedules.sql").unlink()
    (migrations / "0100_mine.sql").write_text("CREATE TABLE mine (x);", encoding="utf-8")
    errors = errors_of(path)
    assert [p.code for p in errors] == ["d1-migrations"]
    assert "lacks the Kumofire Jobs migrations 0002_schedules.sql" in errors[0].message
    with (migrations / "0001_job_runs.sql").open("a", encoding="utf-8") as file:
        file.write("\n-- edited\n")
    (migrations / "0002_schedules.sql").write_text(
        (REPO / "migrations" / "0002_schedules.sql").read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    errors = errors_of(path)
    assert [p.code for p in errors] == ["d1-migrations"]
    assert "0001_job_runs.sql differ" in errors[0].message


def test_the_placeholder_database_id_is_a_warning(make_project: ProjectFactory) -> None:
    problems = problems_of(make_project())
    assert [(p.code, p.severity) for p in problems] == [("d1-database-id", Severity.WARNING)]
    real = _set("d1_databases", 0, "database_id", value="5f1e6a4c-0000-4000-8000-000000000001")
    assert problems_of(make_project(real)) == []


def test_several_problems_are_all_named(make_project: ProjectFactory) -> None:
    def break_it(config: dict[str, Any]) -> None:
        config["compatibility_flags"] = []
        config["queues"]["consumers"][0]["max_batch_timeout"] = 30
        del config["triggers"]

    codes = [p.code for p in errors_of(make_project(break_it))]
    assert codes == ["compatibility-flags", "queue-batch-timeout", "cron-trigger"]


# --- reading configs ---------------------------------------------------------------------------


def test_jsonc_configs_are_read(tmp_path: Path) -> None:
    path = tmp_path / "wrangler.jsonc"
    path.write_text(
        '{\n  // the Worker\n  "name": "x", /* block */ "main": "a//b.py",\n'
        '  "compatibility_flags": ["python_workers",],\n}\n',
        encoding="utf-8",
    )
    config = load_config(path)
    assert config.data == {
        "name": "x",
        "main": "a//b.py",
        "compatibility_flags": ["python_workers"],
    }


def test_a_missing_or_broken_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match=r"no wrangler config at .*pass --config FILE"):
        load_config(tmp_path / "wrangler.toml")
    (tmp_path / "wrangler.toml").write_text("name = ", encoding="utf-8")
    with pytest.raises(DeployError, match="not a valid wrangler config"):
        load_config(tmp_path / "wrangler.toml")


def test_the_default_config_is_wranglers_choice(tmp_path: Path) -> None:
    assert default_config_path(tmp_path) == tmp_path / "wrangler.toml"
    (tmp_path / "wrangler.json").write_text("{}", encoding="utf-8")
    assert default_config_path(tmp_path) == tmp_path / "wrangler.json"
    (tmp_path / "wrangler.toml").write_text("", encoding="utf-8")
    assert default_config_path(tmp_path) == tmp_path / "wrangler.toml"


def test_a_database_is_found_by_name_or_binding_and_others_are_named() -> None:
    config = load_config(REPO / "wrangler.toml")
    assert d1_database(config, "kumofire-jobs")["binding"] == "JOBS_DB"
    assert d1_database(config, "JOBS_DB")["database_name"] == "kumofire-jobs"
    with pytest.raises(DeployError) as raised:
        d1_database(config, "jobs")
    assert str(raised.value) == (
        f"no D1 database named 'jobs' in {REPO / 'wrangler.toml'}: the databases there are: "
        "kumofire-jobs (binding JOBS_DB)"
    )


def test_a_config_without_databases_says_so(tmp_path: Path) -> None:
    path = tmp_path / "wrangler.toml"
    path.write_text('name = "x"\n', encoding="utf-8")
    with pytest.raises(DeployError, match=r"declares no \[\[d1_databases\]\]"):
        d1_database(load_config(path), "kumofire-jobs")


# --- remote handlers ----------------------------------------------------------------------------

HANDLERS_SERVICE = {"binding": "HANDLERS", "service": "my-handlers", "entrypoint": "Handlers"}


def _remote(routes: Any, services: list[Any], batch: int | None = 25) -> Callable[..., None]:
    def change(config: dict[str, Any]) -> None:
        config["vars"] = {"KUMOFIRE_REMOTE_HANDLERS": routes}
        config["services"] = services
        if batch is None:
            del config["queues"]["consumers"][0]["max_batch_size"]
        else:
            config["queues"]["consumers"][0]["max_batch_size"] = batch

    return change


@pytest.mark.parametrize(
    "routes",
    [
        {"notify": {"binding": "HANDLERS", "method": "run_job"}},
        '{"notify": {"binding": "HANDLERS"}}',
    ],
    ids=["table", "json-text"],
)
def test_remote_handlers_with_their_service_binding_pass(
    make_project: ProjectFactory, routes: Any
) -> None:
    problems = problems_of(make_project(_remote(routes, [HANDLERS_SERVICE])))
    assert [p.code for p in problems] == ["d1-database-id"]
    # Without max_batch_size the platform's default, 10, is small enough too.
    problems = problems_of(make_project(_remote(routes, [HANDLERS_SERVICE], batch=None)))
    assert [p.code for p in problems] == ["d1-database-id"]


def test_a_route_to_an_undeclared_binding_is_an_error(make_project: ProjectFactory) -> None:
    routes = {"notify": {"binding": "MAILER"}}
    errors = errors_of(make_project(_remote(routes, [HANDLERS_SERVICE])))
    assert [p.code for p in errors] == ["remote-handlers"]
    assert "routes job 'notify' to 'MAILER', but no [[services]] has binding = 'MAILER'" in (
        errors[0].message
    )


def test_a_malformed_routing_var_is_an_error(make_project: ProjectFactory) -> None:
    errors = errors_of(make_project(_remote({"notify": {"bindings": "H"}}, [HANDLERS_SERVICE])))
    assert [p.code for p in errors] == ["remote-handlers"]
    assert "unknown field(s): bindings" in errors[0].message


def test_big_batches_with_remote_handlers_are_a_warning(make_project: ProjectFactory) -> None:
    routes = {"notify": {"binding": "HANDLERS"}}
    problems = problems_of(make_project(_remote(routes, [HANDLERS_SERVICE], batch=100)))
    batch = [p for p in problems if p.code == "remote-handlers-batch"]
    assert [p.severity for p in batch] == [Severity.WARNING]
    assert "lower max_batch_size to 31 or less" in batch[0].message
