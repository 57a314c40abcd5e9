"""The msgspec test double (tests/workerd/msgspec_double/) against the real msgspec 0.19, on
the cases the Worker path relies on. Fast: not part of the `workerd` marker."""

from __future__ import annotations

import enum
import importlib.util
import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, TypeVar

import msgspec as real
import pytest

DOUBLE_DIR = Path(__file__).parent / "msgspec_double"
REPO = Path(__file__).resolve().parents[2]


def load_double() -> ModuleType:
    name = "kumofire_msgspec_double"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name,
        DOUBLE_DIR / "msgspec" / "__init__.py",
        submodule_search_locations=[str(DOUBLE_DIR / "msgspec")],
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fake = load_double()
T = TypeVar("T")


class Color(enum.Enum):
    RED = "red"


def kinds(lib: Any) -> dict[str, type[Any]]:
    """The same Struct shapes as the Worker path declares them, on either library.

    The base class is chosen at run time (either library's `Struct`), which a class statement
    cannot declare to mypy: hence the `type: ignore[misc, call-arg]` on each."""

    class Message(lib.Struct, kw_only=True):  # type: ignore[misc, call-arg]
        version: int
        kumofireJobRunId: str

    class Policy(lib.Struct, frozen=True, kw_only=True):  # type: ignore[misc, call-arg]
        max_attempts: int = 3
        base_delay: float = 1.0

        def __post_init__(self) -> None:
            if self.max_attempts < 1:
                raise ValueError("max_attempts must be at least 1")

    class Request(lib.Struct, kw_only=True, forbid_unknown_fields=True):  # type: ignore[misc, call-arg]
        name: str
        payload: Any = None
        delay: float | None = None

    class Page(lib.Struct, Generic[T], kw_only=True):  # type: ignore[misc, call-arg]
        items: list[T]
        next_cursor: str | None

    class Migration(lib.Struct, frozen=True):  # type: ignore[misc, call-arg]
        number: int
        name: str

    return {"Message": Message, "Policy": Policy, "Request": Request, "Page": Page,
            "Migration": Migration}  # fmt: skip


REAL, FAKE = kinds(real), kinds(fake)

ENCODED: list[Any] = [
    None, True, 0, -5, 2**53, 1.5, 0.1, 12345.678, "", "héllo ☃ \n \"q\" \\", [1, [2, {"a": None}]],
    {"a": 1, "b": [True, False], "ü": "x"}, {"x" * 1000: "y" * 100_000}, (1, 2),
    datetime(2026, 8, 1, 12, 0, 0, tzinfo=UTC),
    datetime(2026, 8, 1, 12, 0, 0, 123000, tzinfo=UTC),
    datetime(2026, 8, 1, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=2))),
    datetime(2026, 8, 1, 12, 0),
    Color.RED, {1: "int key"},
]  # fmt: skip


@pytest.mark.parametrize("value", ENCODED, ids=repr)
def test_encode_matches(value: Any) -> None:
    assert fake.json.encode(value) == real.json.encode(value)
    assert fake.json.Encoder().encode(value) == real.json.Encoder().encode(value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_encode_as_null(value: float) -> None:
    assert fake.json.encode(value) == real.json.encode(value) == b"null"


def test_structs_encode_as_objects_in_field_order() -> None:
    made = [kinds_["Page"](items=[kinds_["Migration"](1, "a.sql")], next_cursor=None)
            for kinds_ in (REAL, FAKE)]  # fmt: skip
    assert fake.json.encode(made[1]) == real.json.encode(made[0])


@pytest.mark.parametrize("value", [object(), {(1, 2): "tuple key"}, {1.5j}])
def test_unencodable_raises_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        real.json.encode(value)
    with pytest.raises(TypeError):
        fake.json.encode(value)


@pytest.mark.parametrize(
    "text",
    [b"{}", b'{"a": [1, 2.5, "x", null, true]}', '"\\u00e9"', b"123", "[]", b" 1 "],
)
def test_decode_matches(text: bytes | str) -> None:
    assert fake.json.decode(text) == real.json.decode(text)


@pytest.mark.parametrize("text", [b"", b"{", b"nope", b"NaN", b"\xff\xfe", b"[1,]", "{'a': 1}"])
def test_malformed_json_is_a_decode_error(text: bytes | str) -> None:
    with pytest.raises(real.DecodeError):
        real.json.decode(text)
    with pytest.raises(fake.DecodeError):
        fake.json.decode(text)


LONE_SURROGATES = [
    b'"\\ud800"', b'"\\ud800x"', b'{"a": "\\uDBFF"}', b'"\\udc00"', b'["\\ud800\\u0041"]',
    b'{"\\ud800": 1}',
]  # fmt: skip


@pytest.mark.parametrize("text", LONE_SURROGATES, ids=repr)
def test_a_lone_surrogate_escape_is_a_decode_error_with_msgspec_s_words(text: bytes) -> None:
    # The Worker's 400 invalid_json for it (web/body.py) reads msgspec's message: the double
    # decoded it instead, and the Worker answered 422 where `kumofire-jobs dev` answered 400.
    with pytest.raises(real.DecodeError) as real_error:
        real.json.decode(text)
    with pytest.raises(fake.DecodeError) as fake_error:
        fake.json.decode(text)
    assert str(fake_error.value).split(" (byte")[0] == str(real_error.value).split(" (byte")[0]


def test_a_surrogate_pair_escape_decodes_as_in_msgspec() -> None:
    text = b'["\\ud800\\udc00", "\\\\ud800"]'
    assert fake.json.decode(text) == real.json.decode(text) == ["\U00010000", "\\ud800"]


MESSAGES: list[Any] = [
    {"version": 1, "kumofireJobRunId": "run_1"},
    {"version": 1, "kumofireJobRunId": "run_1", "extra": [1]},
]
BAD_MESSAGES: list[Any] = [
    {}, {"version": 1}, {"kumofireJobRunId": "run_1"}, {"version": True, "kumofireJobRunId": "r"},
    {"version": "1", "kumofireJobRunId": "r"}, {"version": 1.0, "kumofireJobRunId": "r"},
    {"version": 1, "kumofireJobRunId": 5}, {"version": 1, "kumofireJobRunId": None},
    [], "text", None, 7,
]  # fmt: skip


@pytest.mark.parametrize("message", MESSAGES, ids=repr)
def test_convert_accepts_what_msgspec_accepts(message: Any) -> None:
    got = fake.convert(message, FAKE["Message"], strict=True)
    want = real.convert(message, REAL["Message"], strict=True)
    assert (got.version, got.kumofireJobRunId) == (want.version, want.kumofireJobRunId)


@pytest.mark.parametrize("message", BAD_MESSAGES, ids=repr)
def test_convert_rejects_what_msgspec_rejects(message: Any) -> None:
    with pytest.raises(real.ValidationError) as want:
        real.convert(message, REAL["Message"], strict=True)
    with pytest.raises(fake.ValidationError) as got:
        fake.convert(message, FAKE["Message"], strict=True)
    assert str(got.value) == str(want.value)


def test_validation_error_is_a_decode_error_as_in_msgspec() -> None:
    assert issubclass(real.ValidationError, real.DecodeError)
    assert issubclass(fake.ValidationError, fake.DecodeError)


@pytest.mark.parametrize("lib_kinds", [REAL, FAKE], ids=["real", "double"])
def test_struct_behaviour(lib_kinds: dict[str, Any]) -> None:
    Policy, Request, Page, Migration = (lib_kinds[k] for k in ("Policy", "Request", "Page",
                                                                "Migration"))  # fmt: skip
    policy = Policy()
    assert (policy.max_attempts, policy.base_delay) == (3, 1.0)
    assert Policy(max_attempts=5) == Policy(max_attempts=5) != Policy()
    assert hash(Policy()) == hash(Policy())
    with pytest.raises(AttributeError):
        policy.max_attempts = 4
    with pytest.raises(ValueError, match="at least 1"):
        Policy(max_attempts=0)
    with pytest.raises(TypeError):
        Policy(5)  # kw_only
    with pytest.raises(TypeError):
        Request()  # missing required
    with pytest.raises(TypeError):
        Request(name="x", nope=1)  # unknown keyword
    assert Request.__struct_fields__ == ("name", "payload", "delay")
    request = Request(name="x")
    request.delay = 2.0  # not frozen
    assert (request.name, request.payload, request.delay) == ("x", None, 2.0)
    assert Migration(1, "a.sql") == Migration(number=1, name="a.sql")
    page = Page(items=[1], next_cursor=None)
    assert page.items == [1]
    assert repr(Migration(1, "a")) == "Migration(number=1, name='a')"


TO_BUILTINS: list[Any] = [
    None, True, 3, 2.5, "x", [1, (2, 3)], {"a": {1: "int key"}}, {"s": {4}}, Color.RED,
    {Color.RED: 1}, datetime(2026, 8, 1, 12, 0, 0, 123000, tzinfo=UTC), b"bytes",
]  # fmt: skip


@pytest.mark.parametrize("value", TO_BUILTINS, ids=repr)
def test_to_builtins_matches(value: Any) -> None:
    assert fake.to_builtins(value) == real.to_builtins(value)


def test_to_builtins_of_structs_matches() -> None:
    """A job's `options` (`JobOptions.to_json`): nested Structs, None where unset."""
    made = [
        lib_kinds["Page"](items=[lib_kinds["Policy"](max_attempts=2), None], next_cursor=None)
        for lib_kinds in (REAL, FAKE)
    ]
    assert fake.to_builtins(made[1]) == real.to_builtins(made[0])
    assert math.isnan(fake.to_builtins([math.nan])[0])  # floats stay floats, as in msgspec


def test_to_builtins_refuses_what_msgspec_refuses() -> None:
    with pytest.raises(TypeError):
        real.to_builtins(object())
    with pytest.raises(TypeError):
        fake.to_builtins(object())


def test_the_double_has_every_msgspec_name_the_worker_path_uses() -> None:
    """Each `msgspec.<name>` in the source of a module the Worker imports exists in the double:
    a name it lacks fails only on workerd (`AttributeError`, a 500), as `to_builtins` did for
    every `/v1/jobs` route."""
    code = """
import re, sys
import msgspec
import kumofire_jobs.cloudflare.worker, kumofire_jobs.cloudflare.entrypoint
import kumofire_jobs.client, kumofire_coordinator
missing = set()
for name, module in list(sys.modules.items()):
    path = getattr(module, "__file__", None) or ""
    if not name.startswith("kumofire_") or not path.endswith(".py"):
        continue
    for dotted in re.findall(r"\\bmsgspec((?:\\.[A-Za-z_]+)+)", open(path).read()):
        found = msgspec
        for part in dotted.strip(".").split("."):
            found = getattr(found, part, None)
        if found is None:
            missing.add(f"msgspec{dotted} ({name})")
print(sorted(missing))
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={
            "PYTHONPATH": f"{DOUBLE_DIR}:{REPO / 'src'}:{REPO / 'coordinator' / 'src'}",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_asdict_matches() -> None:
    assert fake.structs.asdict(FAKE["Migration"](1, "a")) == real.structs.asdict(
        REAL["Migration"](1, "a")
    )


def test_the_worker_path_runs_on_the_double() -> None:
    """The modules the Worker imports, with the double as msgspec (as in the test bundle)."""
    code = """
import msgspec
assert msgspec.__version__.endswith("test-double"), msgspec.__file__
from kumofire_jobs.core.message import parse_message
from kumofire_jobs.core.validation import payload as encode_payload
from kumofire_jobs.api.wire import created_to_wire
from kumofire_jobs.core.models import CreatedRun
from kumofire_jobs import JobOptions, RateLimit, RetryPolicy
import kumofire_jobs.cloudflare.worker
assert parse_message({"version": 1, "kumofireJobRunId": "run_x"}) == "run_x"
assert encode_payload({"a": [1, "é"]}) == '{"a":[1,"é"]}'
assert created_to_wire(CreatedRun(kumofire_job_run_id="r", deduplicated=False)) == {
    "kumofire_job_run_id": "r", "deduplicated": False}
assert RetryPolicy(max_attempts=2).delay(2) == 2.0
options = JobOptions(retry=RetryPolicy(max_attempts=2), rate_limit=RateLimit(limit=1, per=2.0))
assert options.to_json()["rate_limit"] == {"limit": 1, "per": 2.0}
assert options.to_json()["retry"]["max_attempts"] == 2 and options.to_json()["timeout"] is None
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": f"{DOUBLE_DIR}:{REPO / 'src'}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
