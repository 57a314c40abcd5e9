"""The Durable Objects contract on the embedded binding, and what only the embedded one has
(limits, inspection, the scheduler under load, the storage layout)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kumofire_jobs.core.clock import ManualClock
from kumofire_jobs.local.durable_objects import (
    MAX_KEY_BYTES,
    MAX_KEYS_PER_CALL,
    MAX_VALUE_BYTES,
    DataCloneError,
    DurableObjectError,
    LocalDurableObjectNamespace,
)
from tests.support.contract_envs import LocalDurableObjectEnv

from .durable_object_contract import (
    ContractObject,
    DurableObjectContract,
    Probe,
    now_ms,
)


@pytest.fixture
async def do_env(clock: ManualClock, data_dir: Path) -> AsyncIterator[LocalDurableObjectEnv]:
    env = LocalDurableObjectEnv(clock, data_dir / "do")
    await env.open()
    yield env
    await env.close()


class TestLocalDurableObjects(DurableObjectContract):
    pass


# --- Local-only behaviour -------------------------------------------------------------------


async def test_errors_have_the_documented_types(do_env: LocalDurableObjectEnv) -> None:
    stub = do_env.namespace().getByName("rpc")
    with pytest.raises(DurableObjectError, match="boom") as raised:
        await stub.fail("boom")
    assert raised.value.remote is True
    with pytest.raises(DataCloneError):
        await stub.echo({1, 2})


async def test_storage_limits_are_enforced(do_env: LocalDurableObjectEnv) -> None:
    stub = do_env.namespace().getByName("limits")
    await stub.storage("put", "k" * MAX_KEY_BYTES, 1)
    with pytest.raises(DurableObjectError, match="keys cannot exceed"):
        await stub.storage("put", "k" * (MAX_KEY_BYTES + 1), 1)
    with pytest.raises(DurableObjectError, match="keys cannot exceed"):
        await stub.storage("put", "é" * (MAX_KEY_BYTES // 2 + 1), 1)  # counted in UTF-8 bytes
    await stub.storage("put", "big", b"\x00" * MAX_VALUE_BYTES)
    with pytest.raises(DurableObjectError, match="values cannot exceed"):
        await stub.storage("put", "bigger", b"\x00" * (MAX_VALUE_BYTES + 64))
    too_many = [f"k{i}" for i in range(MAX_KEYS_PER_CALL + 1)]
    with pytest.raises(DurableObjectError, match="at most"):
        await stub.storage("get", too_many)
    with pytest.raises(DurableObjectError, match="at most"):
        await stub.storage("put", dict.fromkeys(too_many, 1))
    with pytest.raises(DurableObjectError, match="clone"):
        await stub.storage("put", "k", 2**70)  # wider than storage's 64-bit integers


async def test_alarm_accepts_aware_datetimes_only(do_env: LocalDurableObjectEnv) -> None:
    stub = do_env.namespace().getByName("alarm")
    when = datetime.fromtimestamp(do_env.now(), UTC) + timedelta(seconds=5)
    await stub.storage("setAlarm", now_ms(when.timestamp()))
    assert do_env.namespace().alarm_of("alarm") == now_ms(when.timestamp())
    ctx_storage = await _storage_of(do_env, "alarm")
    await ctx_storage.setAlarm(when)
    assert await ctx_storage.getAlarm() == now_ms(when.timestamp())
    with pytest.raises(TypeError, match="timezone"):
        await ctx_storage.setAlarm(when.replace(tzinfo=None))
    with pytest.raises(TypeError):
        await ctx_storage.setAlarm("soon")


async def _storage_of(env: LocalDurableObjectEnv, name: str) -> Any:
    """The object's own `ctx.storage` (built by a call first)."""
    await env.namespace().getByName(name).whoami()
    ns = env.namespace()
    return ns._actors[ns.idFromName(name).toString()].storage


async def test_storage_returns_fresh_copies(do_env: LocalDurableObjectEnv) -> None:
    storage = await _storage_of(do_env, "copies")
    value = {"list": [1]}
    await storage.put("k", value)
    value["list"].append(2)
    first = await storage.get("k")
    first["list"].append(3)
    assert await storage.get("k") == {"list": [1]}


async def test_inspection_helpers(do_env: LocalDurableObjectEnv) -> None:
    ns = do_env.namespace()
    assert ns.instance_count() == 0
    await ns.getByName("a").whoami()
    await ns.getByName("b").storage("setAlarm", now_ms(do_env.now()) + 1_000)
    assert ns.instance_count() == 2
    assert ns.alarm_of("b") == now_ms(do_env.now()) + 1_000
    assert ns.alarm_of(ns.idFromName("b")) == ns.alarm_of("b")
    assert ns.alarm_of("a") is None
    assert ns.alarm_of("never-touched") is None
    ns.evict_all()
    assert ns.instance_count() == 0
    await do_env.advance(1)
    assert ns.instance_count() == 1  # the alarm rebuilt "b" only
    assert ns.alarm_of("b") is None


async def test_ids_are_checked(do_env: LocalDurableObjectEnv, clock: ManualClock) -> None:
    ns = do_env.namespace()
    with pytest.raises(TypeError):
        ns.idFromString("not-an-id")
    other = LocalDurableObjectNamespace(
        ContractObject, path=do_env.path.parent / "other", clock=clock, class_name="Other"
    )
    try:
        assert other.idFromName("a") != ns.idFromName("a")
        with pytest.raises(TypeError):
            ns.get(other.idFromName("a"))
    finally:
        await other.close()
    with pytest.raises(TypeError, match="locationhint"):
        ns.get(ns.idFromName("a"), {"locationhint": "weur"})


async def test_many_alarms_due_together_fire_at_once(do_env: LocalDurableObjectEnv) -> None:
    ns = do_env.namespace()
    due_ms = now_ms(do_env.now()) + 1_000
    names = [f"bulk-{i}" for i in range(2_000)]
    await asyncio.gather(*(ns.getByName(name).storage("setAlarm", due_ms) for name in names))
    ns.evict_all()
    await do_env.advance(1)
    assert len(do_env.probe.alarms) == len(names)
    assert {call.at for call in do_env.probe.alarms} == {due_ms / 1000}
    assert all(ns.alarm_of(name) is None for name in names)


class HoldingAlarm(ContractObject):
    """An object whose alarm waits on a shared gate: shows alarms of different objects run
    concurrently, and calls to the object interleave with its alarm."""

    async def alarm(self, alarmInfo: Any = None) -> None:
        self.probe.events.append(("alarm", self.ctx.id.name or "?"))
        await self.probe.gate("alarms")
        self.probe.events.append(("alarm done", self.ctx.id.name or "?"))


async def test_alarms_of_different_objects_run_concurrently(
    clock: ManualClock, data_dir: Path
) -> None:
    probe = Probe(now=clock.now)
    async with LocalDurableObjectNamespace(
        HoldingAlarm, path=data_dir, clock=clock, env=SimpleNamespace(PROBE=probe)
    ) as ns:
        due_ms = now_ms(clock.now()) + 1_000
        for i in range(20):
            await ns.getByName(f"o{i}").storage("setAlarm", due_ms)
        await clock.advance(1)
        assert len(probe.events) == 20  # all started, none finished
        assert await ns.getByName("o0").note("during") == "during"  # the gate is open
        probe.open("alarms")
        await clock.advance(0)
        assert sum(1 for kind, _ in probe.events if kind == "alarm done") == 20


async def test_retry_count_survives_a_restart(do_env: LocalDurableObjectEnv) -> None:
    stub = do_env.namespace().getByName("flaky")
    object_id = (await stub.whoami())["id"]
    await stub.storage("put", "alarm:plan", {"fail": True})
    start = do_env.now()
    await stub.storage("setAlarm", now_ms(start))
    await do_env.advance(3)  # runs at +0 and +2 fail; the next retry is due at +6
    await do_env.restart()
    await do_env.advance(3)
    calls = do_env.probe.alarms_of(object_id)
    assert [(c.at - start, c.retry_count) for c in calls] == [(0, 0), (2, 1), (6, 2)]


async def test_alarm_set_before_start_fires_after_start(clock: ManualClock, data_dir: Path) -> None:
    env = LocalDurableObjectEnv(clock, data_dir)
    ns = await env.open(start=False)
    try:
        stub = ns.getByName("early")
        await stub.storage("setAlarm", now_ms(clock.now()))
        await clock.advance(5)
        assert env.probe.alarms == []
        await ns.start()
        await clock.advance(0)
        assert [c.at for c in env.probe.alarms] == [clock.now()]
    finally:
        await env.close()


async def test_stop_cuts_a_running_alarm_which_fires_again(
    clock: ManualClock, data_dir: Path
) -> None:
    probe = Probe(now=clock.now)
    env = SimpleNamespace(PROBE=probe)
    ns = LocalDurableObjectNamespace(HoldingAlarm, path=data_dir, clock=clock, env=env)
    await ns.start()
    await ns.getByName("cut").storage("setAlarm", now_ms(clock.now()))
    await clock.advance(0)
    assert probe.events == [("alarm", "cut")]
    await ns.close()  # mid-handler
    ns = LocalDurableObjectNamespace(HoldingAlarm, path=data_dir, clock=clock, env=env)
    await ns.start()
    try:
        probe.open("alarms")
        await clock.advance(0)
        assert probe.events == [("alarm", "cut"), ("alarm", "cut"), ("alarm done", "cut")]
        assert ns.alarm_of("cut") is None
    finally:
        await ns.close()


async def test_delete_all_can_keep_the_alarm_like_older_compatibility_dates(
    clock: ManualClock, data_dir: Path
) -> None:
    env = LocalDurableObjectEnv(clock, data_dir, delete_all_deletes_alarm=False)
    ns = await env.open()
    try:
        stub = ns.getByName("old")
        await stub.storage("put", "k", 1)
        await stub.storage("setAlarm", now_ms(clock.now()) + 1_000)
        await stub.storage("deleteAll")
        assert await stub.storage("list") == {}
        assert await stub.storage("getAlarm") == now_ms(clock.now()) + 1_000
    finally:
        await env.close()


async def test_objects_share_one_database_file(do_env: LocalDurableObjectEnv) -> None:
    ns = do_env.namespace()
    await asyncio.gather(*(ns.getByName(f"o{i}").storage("put", "k", i) for i in range(200)))
    files = {path.name for path in do_env.path.iterdir()}
    assert files <= {"objects.sqlite3", "objects.sqlite3-wal", "objects.sqlite3-shm"}
    await ns.getByName("o1").sql("CREATE TABLE t (x)")  # SQL gets its own file, on first use
    assert len(list((do_env.path / "sql").glob("*.sqlite3"))) == 1
    await ns.getByName("o1").storage("deleteAll")
    assert list((do_env.path / "sql").iterdir()) == []


async def test_name_is_known_to_an_object_rebuilt_by_its_alarm_after_restart(
    do_env: LocalDurableObjectEnv,
) -> None:
    stub = do_env.namespace().getByName("named")
    await stub.storage("setAlarm", now_ms(do_env.now()) + 1_000)
    await do_env.restart()
    ns = do_env.namespace()
    await do_env.advance(1)
    assert ns.instance_count() == 1
    hex_id = ns.idFromName("named").toString()
    assert ns._actors[hex_id].instance.ctx.id.name == "named"


async def test_names_kept_in_their_own_table_move_into_the_alarms_rows(
    do_env: LocalDurableObjectEnv,
) -> None:
    """A file written when an object's name had a table of its own: at open, the names of the
    objects with an alarm move into their alarm rows and the table goes; an object rebuilt by
    its alarm still knows its name, and a name kept for an object with no alarm is dropped
    (a call brings its id's name)."""
    ns = do_env.namespace()
    await ns.getByName("named").storage("setAlarm", now_ms(do_env.now()) + 1_000)
    await ns.getByName("kv only").storage("put", "k", 1)
    kv_only = ns.idFromName("kv only").toString()
    await do_env.close()
    with closing(sqlite3.connect(do_env.path / "objects.sqlite3")) as conn:
        conn.executescript(
            """
            CREATE TABLE kumofire_local_do_names (
                object_id TEXT PRIMARY KEY, name TEXT NOT NULL
            ) WITHOUT ROWID;
            INSERT INTO kumofire_local_do_names (object_id, name)
                SELECT object_id, name FROM kumofire_local_do_alarms;
            ALTER TABLE kumofire_local_do_alarms DROP COLUMN name;
            """
        )
        conn.execute("INSERT INTO kumofire_local_do_names VALUES (?, 'kv only')", (kv_only,))
        conn.commit()
    ns = await do_env.open()
    with closing(sqlite3.connect(do_env.path / "objects.sqlite3")) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        names = conn.execute("SELECT name FROM kumofire_local_do_alarms").fetchall()
    assert "kumofire_local_do_names" not in tables
    assert names == [("named",)]
    await do_env.advance(1)
    hex_id = ns.idFromName("named").toString()
    assert ns._actors[hex_id].instance.ctx.id.name == "named"
    assert (await ns.get(ns.idFromString(kv_only)).whoami())["name"] is None
    assert await ns.getByName("kv only").storage("get", "k") == 1


async def test_alarm_heap_stays_bounded_under_rearming(do_env: LocalDurableObjectEnv) -> None:
    ns = do_env.namespace()
    storage = await _storage_of(do_env, "rearm")
    base = now_ms(do_env.now())
    for i in range(10_000):
        await storage.setAlarm(base + 60_000 + i)
    assert len(ns._heap) <= 4 * 1024
    await do_env.advance(120)
    assert len(do_env.probe.alarms) == 1


async def test_sql_rejects_transaction_statements(do_env: LocalDurableObjectEnv) -> None:
    storage = await _storage_of(do_env, "sql")
    with pytest.raises(ValueError, match="transaction"):
        storage.sql.exec("BEGIN TRANSACTION")
    cursor = storage.sql.exec("CREATE TABLE t (a, b); INSERT INTO t VALUES (1, 'x')")
    assert cursor.rowsWritten == 1
    row = storage.sql.exec("SELECT a, b FROM t").one()
    assert (row.a, row["b"]) == (1, "x")
    assert list(storage.sql.exec("SELECT b FROM t").raw()) == [["x"]]
    assert storage.sql.databaseSize > 0


class FailingBoot(ContractObject):
    """An object whose constructor's blockConcurrencyWhile fails while storage says so."""

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        ctx.blockConcurrencyWhile(self._maybe_fail)

    async def _maybe_fail(self) -> None:
        await asyncio.sleep(0)
        if await self.ctx.storage.get("fail boot"):
            raise RuntimeError("boot failed")


async def test_failed_block_concurrency_while_resets_the_object(
    clock: ManualClock, data_dir: Path
) -> None:
    probe = Probe(now=clock.now)
    async with LocalDurableObjectNamespace(
        FailingBoot, path=data_dir, clock=clock, env=SimpleNamespace(PROBE=probe)
    ) as ns:
        stub = ns.getByName("boot")
        await stub.storage("put", "fail boot", True)  # this instance was built before
        ns.evict("boot")
        with pytest.raises(DurableObjectError, match="boot failed"):
            await stub.whoami()
        assert ns.instance_count() == 0
        storage = ns._actors[ns.idFromName("boot").toString()].storage
        assert storage is not None
        await storage.put("fail boot", False)
        assert (await stub.whoami())["instance"] == probe.constructed


# --- Write coalescing and the output gate -----------------------------------------------------


def _committed_value(path: Path, object_id: str, key: str) -> Any:
    """A KV value as committed on disk (read through a connection of its own), or None."""
    import sqlite3

    import msgspec

    conn = sqlite3.connect(path / "objects.sqlite3")
    try:
        row = conn.execute(
            "SELECT value FROM kumofire_local_do_kv WHERE object_id = ? AND key = ?",
            (object_id, key),
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else msgspec.msgpack.decode(row[0])


@dataclass
class LocalProbe(Probe):
    """The probe, with what the objects below reach besides it: the namespace's directory, and
    the namespace itself (`Coalescing`) or the local D1 and a queue producer (`Outgoing`)."""

    path: Path = field(kw_only=True)
    namespace: Any = None
    d1: Any = None
    queue: Any = None


class Coalescing(ContractObject):
    """Reports what is committed on disk while its own call is still running."""

    probe: LocalProbe

    async def write_then_read(self, key: str, value: Any) -> dict[str, Any]:
        await self.ctx.storage.put(key, value)
        return {
            "read": await self.ctx.storage.get(key),
            "on_disk": _committed_value(self.probe.path, self.ctx.id.toString(), key),
        }

    async def write_then_tell(self, key: str, target: str) -> Any:
        await self.ctx.storage.put(key, "written")
        # An RPC to another object is output: the write must be durable before it leaves.
        return await self.probe.namespace.getByName(target).read_committed(
            self.ctx.id.toString(), key
        )

    async def read_committed(self, object_id: str, key: str) -> Any:
        value = _committed_value(self.probe.path, object_id, key)
        self.probe.events.append(("read_committed", value))
        return value

    async def write_then_hang(self, key: str) -> None:
        await self.ctx.storage.put(key, "unacknowledged")
        await self.probe.gate("never")

    async def call_itself_then_read(self, name: str) -> list[Any]:
        # With no writes pending, nothing holds the call back but the input gate, which this
        # call holds until it awaits something other than storage.
        call = self.probe.namespace.getByName(name).storage("put", "n", 2)
        seen = await self.ctx.storage.get("n")
        await call
        return [seen, await self.ctx.storage.get("n")]


async def _coalescing(
    clock: ManualClock, path: Path, start_in_caller: frozenset[str] = frozenset()
) -> tuple[LocalDurableObjectNamespace, LocalProbe]:
    probe = LocalProbe(now=clock.now, path=path)
    ns = LocalDurableObjectNamespace(
        Coalescing,
        path=path,
        clock=clock,
        env=SimpleNamespace(PROBE=probe),
        start_in_caller=start_in_caller,
    )
    probe.namespace = ns
    await ns.start()
    return ns, probe


async def test_a_write_is_read_back_in_its_call_before_it_commits(
    clock: ManualClock, data_dir: Path
) -> None:
    ns, _ = await _coalescing(clock, data_dir)
    try:
        seen = await ns.getByName("a").write_then_read("k", {"v": 1})
        assert seen == {"read": {"v": 1}, "on_disk": None}  # pending, yet visible to the call
        object_id = ns.idFromName("a").toString()
        assert _committed_value(data_dir, object_id, "k") == {"v": 1}  # durable once answered
    finally:
        await ns.close()


async def test_an_answer_is_released_only_after_its_writes_are_durable(
    clock: ManualClock, data_dir: Path
) -> None:
    ns, _ = await _coalescing(clock, data_dir)
    object_id = ns.idFromName("a").toString()
    on_disk_when_answered: list[Any] = []
    try:
        calls = [ns.getByName("a").storage("put", f"k{i}", i) for i in range(3)]
        for i, call in enumerate(calls):
            call.add_done_callback(  # type: ignore[attr-defined]
                lambda _, i=i: on_disk_when_answered.append(
                    _committed_value(data_dir, object_id, f"k{i}")
                )
            )
        await asyncio.gather(*calls)
        assert on_disk_when_answered == [0, 1, 2]
    finally:
        await ns.close()


async def test_writes_are_durable_before_an_rpc_leaves_the_object(
    clock: ManualClock, data_dir: Path
) -> None:
    ns, probe = await _coalescing(clock, data_dir)
    try:
        # `read_committed` reads the caller's write on disk when the call reaches it.
        assert await ns.getByName("a").write_then_tell("k", "b") == "written"
        assert probe.events == [("read_committed", "written")]
    finally:
        await ns.close()


async def test_an_rpc_out_shares_the_turns_commit_with_other_writers(
    clock: ManualClock, data_dir: Path
) -> None:
    # An object's call out waits for its writes to be durable: with other work ready in the
    # same turn it waits for the turn's group commit (one for all of them), not a commit of
    # its own made when the call is sent.
    ns, _ = await _coalescing(clock, data_dir)
    commits = 0
    original = ns._write_out

    def counting(dirty: Any) -> None:
        nonlocal commits
        commits += 1
        original(dirty)

    ns._write_out = counting  # type: ignore[method-assign]
    try:
        told = await asyncio.gather(
            *(ns.getByName(f"a{i}").write_then_tell("k", f"b{i}") for i in range(20))
        )
        assert told == ["written"] * 20  # each callee saw its caller's write on disk
        assert commits == 1
    finally:
        await ns.close()


async def test_a_call_out_whose_callers_writes_were_lost_is_not_delivered(
    clock: ManualClock, data_dir: Path
) -> None:
    import sqlite3

    ns, probe = await _coalescing(clock, data_dir)

    def failing(dirty: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    ns._write_out = failing  # type: ignore[method-assign]
    try:
        calls = [ns.getByName(f"a{i}").write_then_tell("k", f"b{i}") for i in range(2)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        for outcome in outcomes:
            assert isinstance(outcome, DurableObjectError)
            assert "disk I/O error" in str(outcome)
        assert probe.events == []  # neither call out reached its object
    finally:
        await ns.close()


async def test_writes_of_concurrent_calls_share_one_commit(
    clock: ManualClock, data_dir: Path
) -> None:
    ns, _ = await _coalescing(clock, data_dir)
    commits = 0
    original = ns._write_out

    def counting(dirty: Any) -> None:
        nonlocal commits
        commits += 1
        original(dirty)

    ns._write_out = counting  # type: ignore[method-assign]
    try:
        await asyncio.gather(*(ns.getByName(f"o{i}").storage("put", "k", i) for i in range(50)))
        assert commits == 1
        assert [await ns.getByName(f"o{i}").storage("get", "k") for i in range(50)] == list(
            range(50)
        )
    finally:
        await ns.close()


async def test_a_call_an_object_makes_to_itself_waits_for_the_input_gate(
    clock: ManualClock, data_dir: Path
) -> None:
    # A call of a `start_in_caller` method from code outside any object starts at once, in
    # its caller's step; one made inside an object's call must not: that call holds the gate
    # until it awaits.
    ns, _ = await _coalescing(clock, data_dir, frozenset({"storage", "call_itself_then_read"}))
    try:
        await ns.getByName("a").storage("put", "n", 1)
        assert await ns.getByName("a").call_itself_then_read("a") == [1, 2]
    finally:
        await ns.close()


async def test_a_crash_loses_only_writes_whose_call_had_not_returned(
    clock: ManualClock, data_dir: Path
) -> None:
    ns, _ = await _coalescing(clock, data_dir, frozenset({"write_then_hang"}))
    await ns.getByName("a").storage("put", "acknowledged", 1)
    hanging = asyncio.ensure_future(ns.getByName("a").write_then_hang("pending"))
    # The call has started and written (a call runs at once until it first waits); its
    # turn has not ended.
    storage = ns._actors[ns.idFromName("a").toString()].storage
    assert storage is not None
    await storage.put("direct", 2)  # returned, but its turn has not ended either
    await ns.abort()
    assert hanging.cancelled()
    ns, _ = await _coalescing(clock, data_dir)
    try:
        stub = ns.getByName("a")
        assert await stub.storage("get", "acknowledged") == 1
        assert await stub.storage("get", "pending") is None
        assert await stub.storage("get", "direct") is None
    finally:
        await ns.close()


async def test_a_failed_commit_fails_the_calls_it_held_and_resets_the_object(
    clock: ManualClock, data_dir: Path
) -> None:
    import sqlite3

    ns, _ = await _coalescing(clock, data_dir)
    try:
        stub = ns.getByName("a")
        await stub.storage("put", "k", "old")
        first = (await stub.whoami())["instance"]
        original = ns._write_out

        def failing(dirty: Any) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        ns._write_out = failing  # type: ignore[method-assign]
        with pytest.raises(DurableObjectError, match="disk I/O error"):
            await stub.storage("put", "k", "new")
        ns._write_out = original  # type: ignore[method-assign]
        assert await stub.storage("get", "k") == "old"  # the lost write is not seen
        assert (await stub.whoami())["instance"] != first  # rebuilt from what is committed
    finally:
        await ns.close()


async def test_reads_of_a_new_object_need_no_query(do_env: LocalDurableObjectEnv) -> None:
    ns = do_env.namespace()
    queries: list[str] = []
    ns._db.set_trace_callback(queries.append)
    stub = ns.getByName("fresh")
    assert await stub.storage("get", "k") is None
    assert await stub.storage("get", ["a", "b"]) == {}
    assert not [q for q in queries if q.startswith("SELECT")]
    ns._db.set_trace_callback(None)


async def test_the_cache_keeps_thousands_of_small_records_and_no_run_of_large_ones(
    do_env: LocalDurableObjectEnv,
) -> None:
    # The read cache is bounded in bytes (a few MB, as on the platform), not in keys: an
    # object with thousands of small records (a limiter's line) reads and deletes them with
    # no query, while large values make it start over.
    ns = do_env.namespace()
    queries: list[str] = []
    small = ns.getByName("small")
    for batch in range(40):  # 5,000 records of a few dozen bytes
        await small.storage("put", {f"wait:{batch}-{i}": {"due": i} for i in range(125)})
    ns._db.set_trace_callback(queries.append)
    assert await small.storage("get", "wait:0-0") == {"due": 0}
    assert await small.storage("delete", "wait:39-124") is True
    assert not [q for q in queries if q.startswith("SELECT")]
    large = ns.getByName("large")
    for i in range(40):  # 40 values of 120 KiB: past the bound, the cache starts over
        await large.storage("put", f"k{i}", "x" * 120_000)
    queries.clear()
    assert await large.storage("get", "k0") == "x" * 120_000
    assert [q for q in queries if q.startswith("SELECT")]
    ns._db.set_trace_callback(None)


class Outgoing(ContractObject):
    """Writes, then performs I/O through the other local bindings."""

    probe: LocalProbe

    async def write_then_query(self, key: str) -> Any:
        await self.ctx.storage.put(key, "written")
        # `committed(object_id, key)` is evaluated when D1 runs the statement.
        return await (
            self.probe.d1.prepare("SELECT committed(?, ?) AS seen")
            .bind(self.ctx.id.toString(), key)
            .first("seen")
        )

    async def write_then_send(self, key: str) -> None:
        await self.ctx.storage.put(key, "written")
        await self.probe.queue.send({"key": key})


async def test_writes_are_durable_before_a_d1_statement_or_a_queue_send_runs(
    clock: ManualClock, data_dir: Path
) -> None:
    from kumofire_jobs.local.d1 import LocalD1Database
    from kumofire_jobs.local.queue import LocalQueueBroker

    d1 = LocalD1Database(data_dir / "d1.sqlite")
    broker = LocalQueueBroker(data_dir / "queues.sqlite", clock)
    do_path = data_dir / "do"
    probe = LocalProbe(now=clock.now, path=do_path)
    d1._conn.create_function(
        "committed", 2, lambda object_id, key: _committed_value(do_path, object_id, key)
    )
    seen_at_send: list[Any] = []
    enqueue = broker._enqueue

    def recording(queue: str, rows: Any) -> None:
        seen_at_send.append(_committed_value(do_path, ns.idFromName("a").toString(), "sent"))
        enqueue(queue, rows)

    broker._enqueue = recording  # type: ignore[method-assign]
    probe.d1 = d1
    probe.queue = broker.producer("q")
    ns = LocalDurableObjectNamespace(
        Outgoing, path=do_path, clock=clock, env=SimpleNamespace(PROBE=probe)
    )
    try:
        assert await ns.getByName("a").write_then_query("queried") == "written"
        await ns.getByName("a").write_then_send("sent")
        assert seen_at_send == ["written"]
    finally:
        await ns.close()
        broker.close()
        d1.close()
