"""The value conversions across the Python/JavaScript boundary, on the host and (with stand-in
`pyodide.ffi` and `js` modules) along the Pyodide branch."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from types import SimpleNamespace
from typing import Any

import pytest

from kumofire_jobs.cloudflare import ffi
from kumofire_jobs.cloudflare.errors import CloudflareError, QueueError, raise_platform
from kumofire_jobs.cloudflare.ffi import JS_NULL, HostJsArray, HostJsObject, to_js, to_py
from tests.support.fake_sdk import JsBuffer, JsDate, JsDict, JsError, JsProxy


class Color(StrEnum):
    RED = "red"


def test_to_js_makes_javascript_values() -> None:
    value = to_js({"a": [1, (2, None)], "b": bytearray(b"x"), "c": Color.RED, "d": True})
    assert value == {"a": [1, [2, JS_NULL]], "b": b"x", "c": "red", "d": True}
    assert type(value) is HostJsObject
    assert type(value["a"]) is HostJsArray and type(value["a"][1]) is HostJsArray
    assert type(value["b"]) is bytes and type(value["c"]) is str
    assert to_js(None) is JS_NULL
    assert to_js(memoryview(b"ab")) == b"ab"
    assert to_js(2**60) == 2**60  # a BigInt under Pyodide; D1 refuses it with its own error


@pytest.mark.parametrize(
    "value",
    [{1, 2}, object(), {"k": {3: "int key"}}, datetime(2027, 1, 1), [lambda: None]],
    ids=["set", "object", "int-key", "datetime", "function"],
)
def test_to_js_refuses_what_is_not_plain_data(value: Any) -> None:
    with pytest.raises(TypeError, match="JavaScript"):
        to_js(value)


def test_to_js_refuses_cycles() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(TypeError, match="cyclic"):
        to_js(cycle)


def test_to_py_makes_plain_python() -> None:
    sdk_value = JsDict(a=JsDict(b=[memoryview(b"x"), None]), c=JS_NULL)
    assert to_py(sdk_value) == {"a": {"b": [b"x", None]}, "c": None}
    assert type(to_py(sdk_value)) is dict
    proxy = JsProxy({"rows": [{"blob": b"\x01", "none": None}], "n": 2})
    assert to_py(proxy) == {"rows": [{"blob": b"\x01", "none": None}], "n": 2}
    assert to_py(JsBuffer(b"raw")) == b"raw"
    assert to_py(JS_NULL) is None and to_py(None) is None
    date = JsDate(1.0)
    assert to_py(date) is date  # no plain form: left as it is
    assert to_py((1, 2)) == [1, 2]


def test_to_py_does_not_call_to_py_through_a_forwarding_wrapper() -> None:
    class Wrapper:  # like the SDK's _BindingWrapper: every attribute forwarded
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"{name} must not be looked up")

    wrapper = Wrapper()
    assert to_py(wrapper) is wrapper


def test_js_error_and_raise_platform() -> None:
    assert ffi.js_error(JsError("TypeError", "bad")) == ("TypeError", "bad")
    assert ffi.js_error(ValueError("python")) is None
    with pytest.raises(QueueError, match=r"^bad$") as caught:
        raise_platform(JsError("TypeError", "bad"), QueueError)
    assert caught.value.name == "TypeError"
    with pytest.raises(ValueError, match="python"):
        raise_platform(ValueError("python"), QueueError)
    already = CloudflareError("kept")
    with pytest.raises(CloudflareError) as again:
        raise_platform(already, QueueError)
    assert again.value is already


# --- The Pyodide branch, with stand-in modules ------------------------------------------------


class FakeJsProxy:
    pass


class FakePyodide:
    """Stand-ins for `pyodide.ffi` and `js`, recording `to_js` calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict[str, Any]]] = []
        self.from_entries = object()
        self.ffi = SimpleNamespace(to_js=self.to_js, JsProxy=FakeJsProxy)
        self.js = SimpleNamespace(Object=SimpleNamespace(fromEntries=self.from_entries))

    def to_js(self, value: Any, **options: Any) -> Any:
        self.calls.append((value, options))
        return ("js", value)


@pytest.fixture
def pyodide(monkeypatch: pytest.MonkeyPatch) -> FakePyodide:
    fake = FakePyodide()
    monkeypatch.setattr(ffi, "IN_PYODIDE", True)
    monkeypatch.setattr(ffi, "_pyodide_ffi", lambda: fake.ffi)
    monkeypatch.setattr(ffi, "_js", lambda: fake.js)
    return fake


def test_pyodide_to_js_converts_plain_containers_with_object_from_entries(
    pyodide: FakePyodide,
) -> None:
    handle = FakeJsProxy()
    converted = to_js({"a": (1, None), "h": handle})
    assert converted == ("js", {"a": [1, JS_NULL], "h": handle})
    [(value, options)] = pyodide.calls
    assert type(value) is dict and type(value["a"]) is list  # plain, for Pyodide's to_js
    assert options == {"dict_converter": pyodide.from_entries, "create_pyproxies": False}
    # Primitives, null and JavaScript objects cross as they are.
    assert to_js("text") == "text" and to_js(5) == 5 and to_js(None) is JS_NULL
    assert to_js(handle) is handle
    assert len(pyodide.calls) == 1
    assert ffi.is_js_proxy(handle) and not ffi.is_js_proxy({})
