"""The Durable Objects contract through the Cloudflare adapter's namespace and stubs, over the
local binding presented as the Workers SDK presents the platform's; and `ctx.storage` adapted
as the coordinator actor's storage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kumofire_jobs.cloudflare import (
    CloudflareActorStorage,
    CloudflareDurableObjectNamespace,
    DurableObjectError,
)
from kumofire_jobs.core.clock import ManualClock, now_ms
from kumofire_jobs.local.durable_objects import LocalDurableObjectNamespace
from tests.contracts.durable_object_contract import DurableObjectContract
from tests.support.contract_envs import LocalDurableObjectEnv
from tests.support.fake_sdk import (
    STYLES,
    FakeDurableObjectNamespace,
    FakeDurableObjectStorage,
    JsError,
)


class CloudflareDurableObjectEnv(LocalDurableObjectEnv):
    # Refused by the adapter before anything is sent: keyword arguments, values that are not
    # plain data.
    rejected: tuple[type[BaseException], ...] = (TypeError,)

    def __init__(self, clock: ManualClock, path: Path, style: str) -> None:
        super().__init__(clock, path)
        self.style = style

    def local(self) -> LocalDurableObjectNamespace:
        return super().namespace()

    def namespace(self) -> Any:
        return CloudflareDurableObjectNamespace(
            FakeDurableObjectNamespace(self.local(), self.style)
        )

    async def evict(self, name: str) -> None:
        self.local().evict(name)


@pytest.fixture(params=STYLES)
def style(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def do_env(
    clock: ManualClock, data_dir: Path, style: str
) -> AsyncIterator[CloudflareDurableObjectEnv]:
    env = CloudflareDurableObjectEnv(clock, data_dir / "do", style)
    await env.open()
    yield env
    await env.close()


class TestCloudflareDurableObjects(DurableObjectContract):
    pass


# --- The adapter's own behaviour ------------------------------------------------------------


async def test_results_are_plain_python(do_env: CloudflareDurableObjectEnv) -> None:
    stub = do_env.namespace().getByName("plain")
    value = {"nested": {"list": [1, None, b"\x01"]}, "none": None}
    got = await stub.echo(value, None, (1, 2))
    assert got == [value, None, [1, 2]]
    assert type(got[0]) is dict and type(got[0]["nested"]) is dict
    assert type(got[0]["nested"]["list"][2]) is bytes


async def test_errors_keep_the_message_and_the_javascript_name(
    do_env: CloudflareDurableObjectEnv,
) -> None:
    stub = do_env.namespace().getByName("errors")
    with pytest.raises(DurableObjectError, match=r"^boom$") as caught:
        await stub.fail("boom")
    assert caught.value.name == "Error"
    assert isinstance(caught.value.__cause__, JsError)
    with pytest.raises(DurableObjectError, match="clone") as cloned:
        await stub.unclonable()
    assert cloned.value.name == "DataCloneError"


async def test_unclonable_arguments_are_refused_before_sending(
    do_env: CloudflareDurableObjectEnv,
) -> None:
    stub = do_env.namespace().getByName("refused")
    for value in ({1, 2}, object(), {"key": {3: "int key"}}):
        with pytest.raises(TypeError, match="JavaScript"):
            stub.echo(value)  # raised by the call itself: nothing was sent
    assert do_env.local().instance_count() == 0


def test_private_names_are_not_rpc_methods(do_env: CloudflareDurableObjectEnv) -> None:
    stub = do_env.namespace().getByName("x")
    with pytest.raises(AttributeError):
        _ = stub._private
    with pytest.raises(AttributeError):
        _ = stub.__wrapped__


# --- ctx.storage as ActorStorage --------------------------------------------------------------


async def storage_of(env: CloudflareDurableObjectEnv, name: str) -> CloudflareActorStorage:
    await env.namespace().getByName(name).whoami()
    local = env.local()
    local_storage = local._actors[local.idFromName(name).toString()].storage
    return CloudflareActorStorage(FakeDurableObjectStorage(local_storage, env.style))


async def test_actor_storage_round_trips_values(do_env: CloudflareDurableObjectEnv) -> None:
    storage = await storage_of(do_env, "actor")
    assert await storage.get("state") is None
    state = {"key": "run_1", "due": 1_798_761_600_000, "pending_due": None, "canceled": False}
    await storage.put("state", state)
    got = await storage.get("state")
    assert got == state
    assert type(got) is dict
    assert await storage.list() == {"state": state}
    assert await storage.delete("state") is True
    assert await storage.delete("state") is False
    await storage.put("a", 1)
    await storage.deleteAll()
    assert await storage.list() == {}


async def test_actor_storage_alarms_are_epoch_milliseconds(
    do_env: CloudflareDurableObjectEnv,
) -> None:
    storage = await storage_of(do_env, "alarm")
    assert await storage.getAlarm() is None
    due = now_ms(do_env.clock) + 5_000
    await storage.setAlarm(due)
    alarm = await storage.getAlarm()
    assert alarm == due
    assert type(alarm) is float
    await storage.deleteAlarm()
    assert await storage.getAlarm() is None


async def test_actor_storage_errors_are_durable_object_errors(
    do_env: CloudflareDurableObjectEnv,
) -> None:
    storage = await storage_of(do_env, "limits")
    with pytest.raises(DurableObjectError, match="keys cannot exceed"):
        await storage.put("k" * 100_000, 1)
    with pytest.raises(TypeError, match="JavaScript"):
        await storage.put("k", object())
