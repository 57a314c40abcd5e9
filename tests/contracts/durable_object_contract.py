"""The Durable Objects binding's contract: what any implementation must do, as Cloudflare's.

An implementation plugs in by subclassing `DurableObjectContract` in a test module and providing
a `do_env` fixture that yields a `DurableObjectEnv` whose namespace is bound to
`ContractObject` with `env.PROBE` set to the env's `Probe`. Time only moves through
`env.advance()` / `env.advance_to()`: no test sleeps.

Where the platform documents a behaviour, the test cites it in its docstring.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest

# --- The object under test and its probe ----------------------------------------------------


@dataclass(frozen=True)
class AlarmCall:
    object_id: str
    at: float
    retry_count: int
    is_retry: bool
    alarm_seen: float | None  # what getAlarm() answered when the handler started


@dataclass
class Probe:
    """In-process hooks the contract object reports to and waits on (through `env.PROBE`)."""

    now: Any  # () -> float, the env's clock
    events: list[tuple[str, str]] = field(default_factory=list)
    alarms: list[AlarmCall] = field(default_factory=list)
    constructed: int = 0
    _gates: dict[str, asyncio.Future[Any]] = field(default_factory=dict)

    def gate(self, tag: str) -> asyncio.Future[Any]:
        if tag not in self._gates or self._gates[tag].cancelled():
            self._gates[tag] = asyncio.get_running_loop().create_future()
        return self._gates[tag]

    def open(self, tag: str, value: Any = None) -> None:
        self.gate(tag).set_result(value)

    def alarms_of(self, object_id: str) -> list[AlarmCall]:
        return [call for call in self.alarms if call.object_id == object_id]


class ContractObject:
    """A Durable Object class with a method per behaviour the suite observes.

    The alarm handler's behaviour is read from storage (key `alarm:plan`) so that it survives
    eviction and restarts: `{"fail": bool, "reset_after_ms": int | None}`.
    """

    def __init__(self, ctx: Any, env: Any) -> None:
        self.ctx = ctx
        self.probe: Probe = env.PROBE
        self.probe.constructed += 1
        self.instance = self.probe.constructed
        self.doc: Any = None
        self.booted: Any = None
        # As the platform's examples do: load state in the constructor, not awaited; the
        # input gate keeps calls out until it is done.
        ctx.blockConcurrencyWhile(self._boot)

    async def _boot(self) -> None:
        await asyncio.sleep(0)  # not storage: only blockConcurrencyWhile keeps calls out now
        self.booted = await self.ctx.storage.get("boot")

    async def booted_with(self) -> Any:
        return self.booted

    async def whoami(self) -> dict[str, Any]:
        return {"id": self.ctx.id.toString(), "name": self.ctx.id.name, "instance": self.instance}

    async def storage(self, op: str, *args: Any) -> Any:
        return await getattr(self.ctx.storage, op)(*args)

    async def incr(self, key: str) -> int:
        value = (await self.ctx.storage.get(key) or 0) + 1
        await self.ctx.storage.put(key, value)
        return int(value)

    async def hold(self, tag: str) -> str:
        self.probe.events.append(("start", tag))
        await self.probe.gate(tag)
        self.probe.events.append(("end", tag))
        return tag

    async def note(self, tag: str) -> str:
        self.probe.events.append(("note", tag))
        return tag

    async def block(self, tag: str) -> None:
        async def wait() -> None:
            await self.probe.gate(tag)

        await self.ctx.blockConcurrencyWhile(wait)

    async def remember(self, doc: Any) -> Any:
        self.doc = doc
        return doc

    async def recall(self) -> Any:
        return self.doc

    async def echo(self, *args: Any) -> list[Any]:
        return list(args)

    async def fail(self, message: str) -> None:
        raise LookupError(message)

    async def unclonable(self) -> Any:
        return object()

    async def _private(self) -> str:
        return "private"

    async def sql(self, query: str, *bindings: Any) -> dict[str, Any]:
        cursor = self.ctx.storage.sql.exec(query, *bindings)
        rows = [dict(row) for row in cursor.toArray()]
        return {"rows": rows, "rowsWritten": cursor.rowsWritten}

    async def alarm(self, alarmInfo: Any = None) -> None:
        storage = self.ctx.storage
        self.probe.alarms.append(
            AlarmCall(
                object_id=self.ctx.id.toString(),
                at=self.probe.now(),
                retry_count=alarmInfo.retryCount,
                is_retry=alarmInfo.isRetry,
                alarm_seen=await storage.getAlarm(),
            )
        )
        plan = await storage.get("alarm:plan") or {}
        if plan.get("reset_after_ms") is not None:
            await storage.setAlarm(now_ms(self.probe.now()) + plan["reset_after_ms"])
            await storage.put("alarm:plan", {**plan, "reset_after_ms": None})
        if plan.get("fail"):
            raise RuntimeError("alarm failed on purpose")


def now_ms(now: float) -> int:
    return round(now * 1000)


# --- The environment an implementation provides ---------------------------------------------


class DurableObjectEnv(Protocol):
    """A namespace bound to `ContractObject`, with time under the test's control."""

    probe: Probe
    # What a call rejected before it reaches the object raises (bad arguments, unclonable).
    rejected: tuple[type[BaseException], ...]

    def now(self) -> float: ...

    async def advance(self, seconds: float) -> None:
        """Move time forward, firing every alarm that falls due on the way."""
        ...

    async def advance_to(self, when: float) -> None: ...

    def namespace(self) -> Any:
        """The current namespace binding (a new one after `restart()`)."""
        ...

    async def evict(self, name: str) -> None:
        """Drop the named object's in-memory instance, as the platform does when idle."""
        ...

    async def restart(self) -> None:
        """The process stops and starts again on the same storage, alarms running."""
        ...


async def settle(env: DurableObjectEnv) -> None:
    await env.advance(0)


# --- The suite ------------------------------------------------------------------------------


class DurableObjectContract:
    # Identity ----------------------------------------------------------------------------------

    async def test_same_name_reaches_the_same_object(self, do_env: DurableObjectEnv) -> None:
        ns = do_env.namespace()
        first = await ns.getByName("a").whoami()
        again = await ns.get(ns.idFromName("a")).whoami()
        other = await ns.getByName("b").whoami()
        assert first == again
        assert first["name"] == "a"
        assert re.fullmatch(r"[0-9a-f]{64}", first["id"])
        assert ns.idFromName("a").toString() == first["id"]
        assert ns.idFromName("a").name == "a"
        assert other["id"] != first["id"]
        assert other["instance"] != first["instance"]
        by_string = await ns.get(ns.idFromString(first["id"])).whoami()
        assert by_string["instance"] == first["instance"]

    async def test_objects_have_separate_storage(self, do_env: DurableObjectEnv) -> None:
        ns = do_env.namespace()
        await ns.getByName("a").storage("put", "k", "from a")
        assert await ns.getByName("b").storage("get", "k") is None
        assert await ns.getByName("a").storage("get", "k") == "from a"

    async def test_unique_ids_are_distinct_and_round_trip(self, do_env: DurableObjectEnv) -> None:
        ns = do_env.namespace()
        one, two = ns.newUniqueId(), ns.newUniqueId()
        assert one.toString() != two.toString()
        assert ns.idFromString(one.toString()).toString() == one.toString()
        await ns.get(one).storage("put", "k", 1)
        assert await ns.get(ns.idFromString(one.toString())).storage("get", "k") == 1
        assert await ns.get(two).storage("get", "k") is None

    # KV storage --------------------------------------------------------------------------------

    async def test_put_get_delete(self, do_env: DurableObjectEnv) -> None:
        stub = do_env.namespace().getByName("kv")
        assert await stub.storage("get", "missing") is None
        await stub.storage("put", "k", {"n": 1})
        assert await stub.storage("get", "k") == {"n": 1}
        await stub.storage("put", "k", "replaced")
        assert await stub.storage("get", "k") == "replaced"
        assert await stub.storage("delete", "k") is True
        assert await stub.storage("delete", "k") is False
        assert await stub.storage("get", "k") is None

    async def test_multi_key_get_put_delete(self, do_env: DurableObjectEnv) -> None:
        stub = do_env.namespace().getByName("kv")
        await stub.storage("put", {"a": 1, "b": 2, "c": 3})
        assert await stub.storage("get", ["c", "a", "zz"]) == {"a": 1, "c": 3}
        assert await stub.storage("delete", ["a", "b", "zz"]) == 2
        assert await stub.storage("get", ["a", "b", "c"]) == {"c": 3}

    async def test_values_round_trip_with_their_types(self, do_env: DurableObjectEnv) -> None:
        stub = do_env.namespace().getByName("kv")
        value = {
            "bytes": b"\x00\xffbin",
            "int": 7,
            "float": 1.5,
            "true": True,
            "none": None,
            "text": "naïve ✓",
            "list": [1, [2, {"deep": b"x"}]],
            "tuple": (1, 2),
        }
        await stub.storage("put", "v", value)
        got = await stub.storage("get", "v")
        assert got == {**value, "tuple": [1, 2]}
        assert isinstance(got["bytes"], bytes)
        assert got["true"] is True
        assert isinstance(got["float"], float)
        assert isinstance(got["int"], int)

    async def test_list_is_ordered_and_filtered(self, do_env: DurableObjectEnv) -> None:
        stub = do_env.namespace().getByName("kv")
        await stub.storage("put", {"c": 5, "b2": 3, "a": 1, "b1": 2, "b3": 4})

        async def keys(options: dict[str, Any] | None = None) -> list[str]:
            result = await stub.storage("list", *([options] if options is not None else []))
            return list(result)

        assert await keys() == ["a", "b1", "b2", "b3", "c"]
        assert await stub.storage("list", {"prefix": "b"}) == {"b1": 2, "b2": 3, "b3": 4}
        assert await keys({"start": "b2"}) == ["b2", "b3", "c"]
        assert await keys({"startAfter": "b2"}) == ["b3", "c"]
        assert await keys({"end": "b3"}) == ["a", "b1", "b2"]
        assert await keys({"start": "b1", "end": "c"}) == ["b1", "b2", "b3"]
        assert await keys({"reverse": True}) == ["c", "b3", "b2", "b1", "a"]
        assert await keys({"limit": 2}) == ["a", "b1"]
        assert await keys({"reverse": True, "limit": 2}) == ["c", "b3"]
        assert await keys({"prefix": "b", "reverse": True, "limit": 1}) == ["b3"]

    async def test_delete_all_clears_data_and_the_alarm(self, do_env: DurableObjectEnv) -> None:
        """deleteAll() deletes the alarm too from compatibility date 2026-02-24 (changelog
        2026-02-24 "deleteAll() now deletes Durable Object alarm"); this project's is later."""
        stub = do_env.namespace().getByName("kv")
        object_id = (await stub.whoami())["id"]
        await stub.storage("put", {"a": 1, "b": 2})
        await stub.storage("setAlarm", now_ms(do_env.now()) + 1000)
        await stub.storage("deleteAll")
        assert await stub.storage("list") == {}
        assert await stub.storage("getAlarm") is None
        await do_env.advance(5)
        assert do_env.probe.alarms_of(object_id) == []
        await stub.storage("put", "again", 1)  # the object is usable afterwards
        assert await stub.storage("list") == {"again": 1}

    async def test_unknown_option_keys_are_rejected(self, do_env: DurableObjectEnv) -> None:
        stub = do_env.namespace().getByName("kv")
        with pytest.raises(Exception, match="prefx"):
            await stub.storage("list", {"prefx": "b"})
        with pytest.raises(Exception, match="bogus"):
            await stub.storage("put", "k", 1, {"bogus": True})
        with pytest.raises(Exception, match="nocache"):
            await stub.storage("get", "k", {"nocache": True})
        assert await stub.storage("get", "k") is None  # the rejected put wrote nothing

    # Alarms ------------------------------------------------------------------------------------

    async def test_set_get_and_delete_alarm(self, do_env: DurableObjectEnv) -> None:
        """One alarm per object: setAlarm replaces it (Alarms API)."""
        stub = do_env.namespace().getByName("alarm")
        object_id = (await stub.whoami())["id"]
        start = now_ms(do_env.now())
        assert await stub.storage("getAlarm") is None
        await stub.storage("setAlarm", start + 60_000)
        assert await stub.storage("getAlarm") == start + 60_000
        await stub.storage("setAlarm", start + 30_000)
        assert await stub.storage("getAlarm") == start + 30_000
        await stub.storage("deleteAlarm")
        assert await stub.storage("getAlarm") is None
        await do_env.advance(120)
        assert do_env.probe.alarms_of(object_id) == []

    async def test_alarm_fires_at_its_time_and_not_before(self, do_env: DurableObjectEnv) -> None:
        stub = do_env.namespace().getByName("alarm")
        object_id = (await stub.whoami())["id"]
        due_ms = now_ms(do_env.now()) + 5_000
        await stub.storage("setAlarm", due_ms)
        await do_env.advance_to(due_ms / 1000 - 0.001)
        assert do_env.probe.alarms_of(object_id) == []
        await do_env.advance_to(due_ms / 1000)
        calls = do_env.probe.alarms_of(object_id)
        assert [(c.at, c.retry_count, c.is_retry) for c in calls] == [(due_ms / 1000, 0, False)]
        # During the handler getAlarm() is None; a successful run deletes the alarm.
        assert calls[0].alarm_seen is None
        assert await stub.storage("getAlarm") is None
        await do_env.advance(60)
        assert len(do_env.probe.alarms_of(object_id)) == 1

    async def test_alarm_set_in_the_past_fires_at_once(self, do_env: DurableObjectEnv) -> None:
        stub = do_env.namespace().getByName("alarm")
        object_id = (await stub.whoami())["id"]
        now = do_env.now()
        await stub.storage("setAlarm", now_ms(now) - 60_000)
        await settle(do_env)
        assert [c.at for c in do_env.probe.alarms_of(object_id)] == [now]

    async def test_throwing_alarm_is_retried_with_exponential_backoff(
        self, do_env: DurableObjectEnv
    ) -> None:
        """Alarms API: retried "using exponential backoff starting at a 2 second delay from the
        first failure with up to 6 retries allowed"; alarmInfo carries retryCount/isRetry."""
        stub = do_env.namespace().getByName("alarm")
        object_id = (await stub.whoami())["id"]
        await stub.storage("put", "alarm:plan", {"fail": True})
        start = do_env.now()
        await stub.storage("setAlarm", now_ms(start))
        await do_env.advance(500)
        calls = do_env.probe.alarms_of(object_id)
        assert [c.at - start for c in calls] == [0, 2, 6, 14, 30, 62, 126]
        assert [c.retry_count for c in calls] == [0, 1, 2, 3, 4, 5, 6]
        assert [c.is_retry for c in calls] == [False] + [True] * 6
        assert await stub.storage("getAlarm") is None
        await do_env.advance(5_000)
        assert len(do_env.probe.alarms_of(object_id)) == 7

    async def test_alarm_that_recovers_stops_retrying(self, do_env: DurableObjectEnv) -> None:
        stub = do_env.namespace().getByName("alarm")
        object_id = (await stub.whoami())["id"]
        await stub.storage("put", "alarm:plan", {"fail": True})
        start = do_env.now()
        await stub.storage("setAlarm", now_ms(start))
        await do_env.advance(3)  # the first run and the first retry fail
        assert await stub.storage("getAlarm") == now_ms(start + 6)  # the next retry
        await stub.storage("put", "alarm:plan", {"fail": False})
        await do_env.advance(100)
        calls = do_env.probe.alarms_of(object_id)
        assert [(c.at - start, c.retry_count) for c in calls] == [(0, 0), (2, 1), (6, 2)]
        assert await stub.storage("getAlarm") is None

    async def test_alarm_set_inside_alarm_stands(self, do_env: DurableObjectEnv) -> None:
        stub = do_env.namespace().getByName("alarm")
        object_id = (await stub.whoami())["id"]
        await stub.storage("put", "alarm:plan", {"reset_after_ms": 10_000})
        start = do_env.now()
        await stub.storage("setAlarm", now_ms(start))
        await settle(do_env)
        assert await stub.storage("getAlarm") == now_ms(start) + 10_000
        await do_env.advance(10)
        calls = do_env.probe.alarms_of(object_id)
        assert [(c.at - start, c.retry_count) for c in calls] == [(0, 0), (10, 0)]
        assert await stub.storage("getAlarm") is None

    async def test_alarm_set_by_a_failing_alarm_replaces_the_retry(
        self, do_env: DurableObjectEnv
    ) -> None:
        stub = do_env.namespace().getByName("alarm")
        object_id = (await stub.whoami())["id"]
        await stub.storage("put", "alarm:plan", {"fail": True, "reset_after_ms": 10_000})
        start = do_env.now()
        await stub.storage("setAlarm", now_ms(start))
        await settle(do_env)
        assert await stub.storage("getAlarm") == now_ms(start) + 10_000
        await stub.storage("put", "alarm:plan", {})
        await do_env.advance(60)
        calls = do_env.probe.alarms_of(object_id)
        assert [(c.at - start, c.retry_count) for c in calls] == [(0, 0), (10, 0)]

    # Concurrency (input gate) ------------------------------------------------------------------

    async def test_read_modify_write_over_storage_loses_no_update(
        self, do_env: DurableObjectEnv
    ) -> None:
        """Input gate: while a call awaits storage no other call starts, so get-then-put over
        storage is atomic without locks."""
        stub = do_env.namespace().getByName("counter")
        results = await asyncio.gather(*(stub.incr("n") for _ in range(50)))
        assert sorted(results) == list(range(1, 51))
        assert await stub.storage("get", "n") == 50

    async def test_calls_interleave_while_one_awaits_something_else(
        self, do_env: DurableObjectEnv
    ) -> None:
        """Input gates open while a call awaits I/O other than storage: other calls run."""
        probe = do_env.probe
        stub = do_env.namespace().getByName("gate")
        held = asyncio.ensure_future(stub.hold("a"))
        await settle(do_env)
        assert probe.events == [("start", "a")]
        noted = asyncio.ensure_future(stub.note("b"))
        await settle(do_env)
        assert noted.done()
        assert noted.result() == "b"
        assert not held.done()
        probe.open("a")
        assert await held == "a"
        assert probe.events == [("start", "a"), ("note", "b"), ("end", "a")]

    async def test_block_concurrency_while_holds_other_calls(
        self, do_env: DurableObjectEnv
    ) -> None:
        probe = do_env.probe
        stub = do_env.namespace().getByName("gate")
        await stub.whoami()  # built before blocking
        blocked = asyncio.ensure_future(stub.block("g"))
        await settle(do_env)
        waiting = asyncio.ensure_future(stub.note("after"))
        await settle(do_env)
        assert not waiting.done()
        assert probe.events == []
        probe.open("g")
        await settle(do_env)
        assert blocked.done()
        assert waiting.done()
        assert probe.events == [("note", "after")]

    async def test_constructor_block_concurrency_while_runs_before_any_call(
        self, do_env: DurableObjectEnv
    ) -> None:
        stub = do_env.namespace().getByName("boot")
        await stub.storage("put", "boot", {"loaded": True})
        await do_env.evict("boot")
        assert await stub.booted_with() == {"loaded": True}

    # Lifecycle ---------------------------------------------------------------------------------

    async def test_state_and_alarm_survive_eviction(self, do_env: DurableObjectEnv) -> None:
        stub = do_env.namespace().getByName("evictee")
        before = await stub.whoami()
        await stub.storage("put", "k", b"kept")
        due_ms = now_ms(do_env.now()) + 10_000
        await stub.storage("setAlarm", due_ms)
        await do_env.evict("evictee")
        after = await stub.whoami()
        assert after["id"] == before["id"]
        assert after["instance"] != before["instance"]  # rebuilt
        assert await stub.storage("get", "k") == b"kept"
        assert await stub.storage("getAlarm") == due_ms
        await do_env.evict("evictee")
        await do_env.advance(10)
        assert [c.at for c in do_env.probe.alarms_of(before["id"])] == [due_ms / 1000]

    async def test_state_and_alarm_survive_a_restart(self, do_env: DurableObjectEnv) -> None:
        stub = do_env.namespace().getByName("durable")
        object_id = (await stub.whoami())["id"]
        await stub.storage("put", {"a": [1, 2], "b": b"\x01"})
        due_ms = now_ms(do_env.now()) + 10_000
        await stub.storage("setAlarm", due_ms)
        await do_env.restart()
        stub = do_env.namespace().getByName("durable")
        assert await stub.storage("list") == {"a": [1, 2], "b": b"\x01"}
        assert await stub.storage("getAlarm") == due_ms
        await do_env.advance(10)
        assert [c.at for c in do_env.probe.alarms_of(object_id)] == [due_ms / 1000]

    async def test_alarm_due_during_downtime_fires_after_restart(
        self, do_env: DurableObjectEnv
    ) -> None:
        stub = do_env.namespace().getByName("durable")
        object_id = (await stub.whoami())["id"]
        due_ms = now_ms(do_env.now()) + 1_000
        await stub.storage("setAlarm", due_ms)
        await do_env.restart()
        await settle(do_env)  # not due yet
        assert do_env.probe.alarms_of(object_id) == []
        await do_env.advance(1)
        assert len(do_env.probe.alarms_of(object_id)) == 1

    # RPC ---------------------------------------------------------------------------------------

    async def test_rpc_takes_positional_arguments_only(self, do_env: DurableObjectEnv) -> None:
        stub = do_env.namespace().getByName("rpc")
        assert await stub.echo(1, "two", None) == [1, "two", None]
        with pytest.raises(TypeError):
            await stub.echo(value=1)

    async def test_rpc_values_are_structured_clones(self, do_env: DurableObjectEnv) -> None:
        stub = do_env.namespace().getByName("rpc")
        doc: dict[str, Any] = {"items": [1, 2], "meta": {"k": "v"}}
        returned = await stub.remember(doc)
        doc["items"].append(3)  # the caller's copy, not the object's
        returned["meta"]["k"] = "changed"  # the returned copy, not the object's
        assert await stub.recall() == {"items": [1, 2], "meta": {"k": "v"}}
        assert await stub.echo((1, 2), b"raw") == [[1, 2], b"raw"]

    async def test_unclonable_values_are_rejected(self, do_env: DurableObjectEnv) -> None:
        stub = do_env.namespace().getByName("rpc")
        with pytest.raises(do_env.rejected):
            await stub.echo(object())
        with pytest.raises(do_env.rejected):
            await stub.echo({1: "int key"})
        with pytest.raises(Exception, match="clone"):
            await stub.unclonable()

    async def test_exception_message_crosses_but_not_its_type(
        self, do_env: DurableObjectEnv
    ) -> None:
        """Workers RPC: exception types do not survive, messages do."""
        stub = do_env.namespace().getByName("rpc")
        with pytest.raises(Exception, match="boom 42") as raised:
            await stub.fail("boom 42")
        assert not isinstance(raised.value, LookupError)
        assert await stub.echo("still alive") == ["still alive"]

    async def test_private_and_missing_methods_are_not_callable(
        self, do_env: DurableObjectEnv
    ) -> None:
        stub = do_env.namespace().getByName("rpc")
        with pytest.raises(Exception):  # noqa: B017, PT011 - no type survives RPC
            await stub._private()
        with pytest.raises(Exception, match="no_such_method"):
            await stub.no_such_method()

    # SQL ---------------------------------------------------------------------------------------

    async def test_sql_exec_persists_per_object(self, do_env: DurableObjectEnv) -> None:
        stub = do_env.namespace().getByName("sql")
        await stub.sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        inserted = await stub.sql("INSERT INTO t (v) VALUES (?), (?)", "x", "y")
        assert inserted["rowsWritten"] == 2
        await do_env.evict("sql")
        result = await stub.sql("SELECT id, v FROM t WHERE v = ?", "y")
        assert result["rows"] == [{"id": 2, "v": "y"}]
        with pytest.raises(Exception, match="no such table"):
            await do_env.namespace().getByName("other").sql("SELECT * FROM t")
