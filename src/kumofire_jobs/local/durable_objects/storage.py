"""`ctx.storage`: the KV API, the alarm API and the `sql` accessor, with the platform's limits."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, overload

from .clone import decode, encode
from .errors import DurableObjectError
from .sql import LocalSqlStorage

if TYPE_CHECKING:
    from .actor import Actor
    from .namespace import LocalDurableObjectNamespace

# The KV-backed class limits. SQLite-backed classes allow 2 MB per key plus value; enforcing
# the stricter pair keeps code that runs here within both.
MAX_KEY_BYTES = 2 * 1024  # UTF-8 bytes of one key
MAX_VALUE_BYTES = 128 * 1024  # one serialized value
# Like miniflare: the platform's own serialization adds a few tag bytes, and a 128 KiB byte
# string must still fit.
VALUE_SIZE_SLACK = 32
MAX_KEYS_PER_CALL = 128  # keys in one get/put/delete
# deleteAll() deletes the alarm from compatibility date 2026-02-24 on; the project's is later.
DELETE_ALL_DELETES_ALARM = True

_GET_OPTIONS = frozenset({"allowConcurrency", "noCache"})
_PUT_OPTIONS = frozenset({"allowConcurrency", "allowUnconfirmed", "noCache"})
_LIST_OPTIONS = _GET_OPTIONS | {"start", "startAfter", "end", "prefix", "reverse", "limit"}
_GET_ALARM_OPTIONS = frozenset({"allowConcurrency"})
_SET_ALARM_OPTIONS = frozenset({"allowConcurrency", "allowUnconfirmed"})
_NO_VALUE: Any = object()
# What a storage operation of an instance that a failed commit reset raises (the platform's
# wording): the object was reset under it, and its memory is no longer the object's.
RESET_MESSAGE = "Internal error in Durable Object storage write caused object to be reset."


def check_options(options: Mapping[str, Any] | None, allowed: frozenset[str], op: str) -> None:
    if options is None:
        return
    if not isinstance(options, Mapping):
        raise TypeError(f"{op}() options must be a dict, not {type(options).__name__}")
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(
            f"{op}() got unknown option(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
        )


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"storage keys must be strings, not {type(key).__name__}")
    if len(key) * 4 > MAX_KEY_BYTES and len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"keys cannot exceed {MAX_KEY_BYTES} bytes")
    return key


def _check_keys(keys: Any, op: str) -> list[str]:
    if not isinstance(keys, list | tuple):
        raise TypeError(f"{op}() takes a key or a list of keys")
    if len(keys) > MAX_KEYS_PER_CALL:
        raise ValueError(f"{op}() takes at most {MAX_KEYS_PER_CALL} keys")
    return [_check_key(key) for key in keys]


def _encode_value(value: Any) -> bytes:
    data = encode(value)
    if len(data) > MAX_VALUE_BYTES + VALUE_SIZE_SLACK:
        raise ValueError(f"values cannot exceed {MAX_VALUE_BYTES} bytes")
    return data


def _alarm_ms(scheduled_time: Any) -> int:
    if isinstance(scheduled_time, datetime):
        if scheduled_time.tzinfo is None:
            raise TypeError("setAlarm() needs a timezone-aware datetime")
        return math.floor(scheduled_time.timestamp() * 1000)
    if isinstance(scheduled_time, bool) or not isinstance(scheduled_time, int | float):
        raise TypeError("setAlarm() takes epoch milliseconds or a datetime")
    if not math.isfinite(scheduled_time):
        raise ValueError("setAlarm() needs a finite time")
    return math.floor(scheduled_time)


class LocalDurableObjectStorage:
    """`ctx.storage`: the KV API, the alarm API and `sql`, in the platform's spelling.

    Every method runs to completion without yielding to the event loop (SQLite is called
    synchronously), which is what makes the input gate hold. Writes apply to the object's
    pending writes and commit with the turn's other writes; the output gate holds what the
    object sends until then.
    """

    def __init__(self, namespace: LocalDurableObjectNamespace, actor: Actor) -> None:
        self._namespace = namespace
        self._actor = actor
        # Set when a failed commit reset the object: this storage belonged to the instance
        # reset, whose calls still in flight fail at their next operation (`_live`), as on
        # the platform, instead of writing on beside the fresh instance built from storage.
        self.reset = False

    def _live(self) -> None:
        if self.reset:
            raise DurableObjectError(RESET_MESSAGE)

    # KV ------------------------------------------------------------------------------------

    @overload
    async def get(self, key: str, options: Mapping[str, Any] | None = None) -> Any: ...

    @overload
    async def get(
        self, key: list[str] | tuple[str, ...], options: Mapping[str, Any] | None = None
    ) -> dict[str, Any]: ...

    async def get(self, key: Any, options: Mapping[str, Any] | None = None) -> Any:
        """A key's value (None when absent), or for a list of keys a dict of those present."""
        self._live()
        if options is not None:
            check_options(options, _GET_OPTIONS, "get")
        if isinstance(key, str):
            data = self._namespace._read(self._actor, _check_key(key))
            return None if data is None else decode(data)
        keys = _check_keys(key, "get")
        if not keys:
            return {}
        found = self._namespace._read_many(self._actor, keys)
        return {k: decode(found[k]) for k in sorted(found)}

    async def put(
        self,
        key: str | Mapping[str, Any],
        value: Any = _NO_VALUE,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """`put(key, value)` or `put({key: value, ...})` (then the second argument is options)."""
        self._live()
        actor = self._actor
        if isinstance(key, str):
            if value is _NO_VALUE:
                raise TypeError("put() needs a value")
            if options is not None:
                check_options(options, _PUT_OPTIONS, "put")
            key = _check_key(key)
            actor.writes[key] = _encode_value(value)
        elif isinstance(key, Mapping):
            if options is not None:
                raise TypeError("put(entries, options) takes two arguments")
            entries_options = None if value is _NO_VALUE else value
            check_options(entries_options, _PUT_OPTIONS, "put")
            if len(key) > MAX_KEYS_PER_CALL:
                raise ValueError(f"put() takes at most {MAX_KEYS_PER_CALL} entries")
            # Validate and encode every entry before applying any: all or nothing.
            rows = [(_check_key(k), _encode_value(v)) for k, v in key.items()]
            actor.writes.update(rows)
        else:
            raise TypeError("put() takes a key and a value, or a dict of entries")
        actor.cleared = False
        self._namespace._touch(actor)

    @overload
    async def delete(self, key: str, options: Mapping[str, Any] | None = None) -> bool: ...

    @overload
    async def delete(
        self, key: list[str] | tuple[str, ...], options: Mapping[str, Any] | None = None
    ) -> int: ...

    async def delete(self, key: Any, options: Mapping[str, Any] | None = None) -> bool | int:
        """Delete a key (True if it existed) or a list of keys (how many existed)."""
        self._live()
        check_options(options, _PUT_OPTIONS, "delete")
        keys = [_check_key(key)] if isinstance(key, str) else _check_keys(key, "delete")
        if not keys:
            return 0
        namespace, actor = self._namespace, self._actor
        found = namespace._read_many(actor, keys)
        if found:
            for existing in found:
                actor.writes[existing] = None
            namespace._touch(actor)
        return len(found) > 0 if isinstance(key, str) else len(found)

    async def deleteAll(self, options: Mapping[str, Any] | None = None) -> None:
        """Delete every key, the SQL database and (see DELETE_ALL_DELETES_ALARM) the alarm."""
        self._live()
        check_options(options, _PUT_OPTIONS, "deleteAll")
        namespace, actor = self._namespace, self._actor
        actor.writes.clear()
        actor.writes_clear = True
        if namespace.delete_all_deletes_alarm:
            namespace._delete_alarm(actor)
        namespace._touch(actor)
        actor.cleared = True  # with no alarm left, nothing of the object remains
        if actor.sql is not None:
            actor.sql._destroy()

    async def list(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Entries ordered by key: `prefix`, `start` (inclusive) or `startAfter`, `end`
        (exclusive), `reverse`, `limit`."""
        self._live()
        check_options(options, _LIST_OPTIONS, "list")
        # None stands for JavaScript's undefined: the option is absent.
        opts = {k: v for k, v in (options or {}).items() if v is not None}
        where = ["object_id = ?"]
        params: list[Any] = [self._actor.hex]
        if "start" in opts and "startAfter" in opts:
            raise TypeError("list() takes start or startAfter, not both")
        for option, op in (("start", ">="), ("startAfter", ">"), ("end", "<")):
            if option in opts:
                where.append(f"key {op} ?")
                params.append(_check_key(opts[option]))
        prefix = opts.get("prefix")
        if prefix is not None and prefix != "":
            where.append("key >= ? AND substr(key, 1, ?) = ?")
            params += [_check_key(prefix), len(prefix), prefix]
        order = "DESC" if opts.get("reverse") else "ASC"
        sql = (
            f"SELECT key, value FROM kumofire_local_do_kv WHERE {' AND '.join(where)}"
            f" ORDER BY key {order}"
        )
        if "limit" in opts:
            limit = opts["limit"]
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError("list() limit must be a positive integer")
            sql += " LIMIT ?"
            params.append(limit)
        if self._actor.dirty:
            self._namespace._flush()  # list the committed rows, pending writes included
        rows = self._namespace._db.execute(sql, params).fetchall()
        return {k: decode(v) for k, v in rows}

    async def sync(self) -> None:
        """Resolve once the writes made so far are durable."""
        self._live()
        if self._actor.dirty:
            await self._namespace._durable()

    # Alarm ---------------------------------------------------------------------------------

    async def getAlarm(self, options: Mapping[str, Any] | None = None) -> float | None:
        """The alarm's time in epoch ms, or None. Inside `alarm()`: only one it set itself."""
        self._live()
        if options is not None:
            check_options(options, _GET_ALARM_OPTIONS, "getAlarm")
        return self._namespace._alarm_time(self._actor)

    async def setAlarm(
        self, scheduled_time: float | datetime, options: Mapping[str, Any] | None = None
    ) -> None:
        """Set the object's one alarm (epoch ms or datetime), replacing any other."""
        self._live()
        if options is not None:
            check_options(options, _SET_ALARM_OPTIONS, "setAlarm")
        time_ms = _alarm_ms(scheduled_time)
        instance = self._actor.instance
        if instance is not None and not callable(getattr(instance, "alarm", None)):
            raise TypeError("the Durable Object class must have an alarm() handler to setAlarm()")
        self._namespace._set_alarm(self._actor, time_ms)

    async def deleteAlarm(self, options: Mapping[str, Any] | None = None) -> None:
        self._live()
        if options is not None:
            check_options(options, _SET_ALARM_OPTIONS, "deleteAlarm")
        namespace, actor = self._namespace, self._actor
        if actor.alarm_running or actor.alarm_ms is not None or actor.alarm_row is not None:
            namespace._delete_alarm(actor)

    # SQL -----------------------------------------------------------------------------------

    @property
    def sql(self) -> LocalSqlStorage:
        self._live()
        actor = self._actor
        actor.cleared = False
        if actor.sql is None:
            actor.sql = LocalSqlStorage(self._namespace._sql_path(actor.hex), self._namespace)
        return actor.sql
