"""Test double of msgspec 0.19 (see ../README.md): only what the Worker path uses."""

from __future__ import annotations

import datetime
import enum
import inspect
import typing
from typing import Any

from . import json, structs

__all__ = [
    "DecodeError",
    "EncodeError",
    "MsgspecError",
    "Struct",
    "ValidationError",
    "convert",
    "json",
    "structs",
    "to_builtins",
]

__version__ = "0.19.0+kumofire-test-double"


class MsgspecError(Exception):
    pass


class EncodeError(MsgspecError):
    pass


class DecodeError(MsgspecError):
    pass


class ValidationError(DecodeError):
    pass


_NODEFAULT = object()


class Struct:
    """Keyword/positional construction, defaults, `__post_init__`, `frozen`, `kw_only`,
    equality and repr, `__struct_fields__` in declaration order (bases first)."""

    __struct_fields__: tuple[str, ...] = ()
    __struct_defaults__: dict[str, Any] = {}  # noqa: RUF012
    __struct_config__: dict[str, Any] = {}  # noqa: RUF012

    def __init_subclass__(
        cls,
        *,
        frozen: bool = False,
        kw_only: bool = False,
        forbid_unknown_fields: bool = False,
        **options: Any,
    ) -> None:
        super().__init_subclass__(**options)
        fields: list[str] = list(getattr(cls, "__struct_fields__", ()))
        defaults: dict[str, Any] = dict(getattr(cls, "__struct_defaults__", {}))
        own = inspect.get_annotations(cls)
        for name in own:
            if name.startswith("__") or _is_classvar(own[name]):
                continue
            if name not in fields:
                fields.append(name)
            if name in cls.__dict__:
                value = cls.__dict__[name]
                defaults[name] = value
                delattr(cls, name)  # as msgspec: a field is not a class attribute
            elif name in defaults:
                del defaults[name]
        parent = getattr(cls, "__struct_config__", {})
        cls.__struct_fields__ = tuple(fields)
        cls.__struct_defaults__ = defaults
        cls.__struct_config__ = {
            "frozen": frozen or parent.get("frozen", False),
            "kw_only": kw_only,
            "forbid_unknown_fields": forbid_unknown_fields,
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        fields = cls.__struct_fields__
        config = cls.__struct_config__
        if args and config["kw_only"]:
            raise TypeError(f"Extra positional arguments provided to {cls.__name__}")
        if len(args) > len(fields):
            raise TypeError("Extra positional arguments provided")
        values = dict(zip(fields, args, strict=False))
        for name, value in kwargs.items():
            if name not in fields:
                raise TypeError(f"Unexpected keyword argument '{name}'")
            if name in values:
                raise TypeError(f"Argument '{name}' given by name and position")
            values[name] = value
        for name in fields:
            if name not in values:
                if name not in cls.__struct_defaults__:
                    raise TypeError(f"Missing required argument '{name}'")
                values[name] = _default(cls.__struct_defaults__[name])
            object.__setattr__(self, name, values[name])
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:
            post_init()

    def __setattr__(self, name: str, value: Any) -> None:
        if type(self).__struct_config__["frozen"]:
            raise AttributeError(f"immutable type: '{type(self).__name__}'")
        object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self.__struct_fields__)

    def __hash__(self) -> int:
        if not type(self).__struct_config__["frozen"]:
            raise TypeError(f"unhashable type: '{type(self).__name__}'")
        return hash(tuple(getattr(self, f) for f in self.__struct_fields__))

    def __repr__(self) -> str:
        parts = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__struct_fields__)
        return f"{type(self).__name__}({parts})"

    def __rich_repr__(self) -> Any:  # pragma: no cover - parity with msgspec
        for field in self.__struct_fields__:
            yield field, getattr(self, field)


def _is_classvar(annotation: Any) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar"))


def _default(value: Any) -> Any:
    if isinstance(value, list | dict | set) and not value:
        return type(value)()
    return value


# --- to_builtins ---------------------------------------------------------------------------


def to_builtins(obj: Any, *, builtin_types: Any = None, str_keys: bool = False) -> Any:
    """Structs as dicts of their fields, enums by value, datetimes as RFC 3339, bytes as
    base64, sets as lists, recursively; tuples stay tuples and floats (NaN too) stay floats,
    as in msgspec. Anything else is a TypeError."""
    kept = tuple(builtin_types or ())
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if kept and isinstance(obj, kept):
        return obj
    if isinstance(obj, Struct):
        return {name: to_builtins(getattr(obj, name), builtin_types=kept, str_keys=str_keys)
                for name in obj.__struct_fields__}  # fmt: skip
    if isinstance(obj, dict):
        return {_key(key, str_keys): to_builtins(value, builtin_types=kept, str_keys=str_keys)
                for key, value in obj.items()}  # fmt: skip
    if isinstance(obj, list | set | frozenset):
        return [to_builtins(item, builtin_types=kept, str_keys=str_keys) for item in obj]
    if isinstance(obj, tuple):
        return tuple(to_builtins(item, builtin_types=kept, str_keys=str_keys) for item in obj)
    if isinstance(obj, enum.Enum):
        return to_builtins(obj.value, builtin_types=kept, str_keys=str_keys)
    if isinstance(obj, datetime.datetime | datetime.date):
        return json._builtins(obj)
    if isinstance(obj, bytes | bytearray | memoryview):
        return json._builtins(obj)
    raise TypeError(f"Encoding objects of type {type(obj).__name__} is unsupported")


def _key(key: Any, str_keys: bool) -> Any:
    if isinstance(key, enum.Enum):
        key = key.value
    return str(key) if str_keys and not isinstance(key, str) else key


# --- convert -------------------------------------------------------------------------------


def convert(obj: Any, type: Any, *, strict: bool = True) -> Any:
    """Builtins into a Struct (or a plain type), validating as msgspec does for the simple
    types the Worker path converts (str, int, float, bool, None, Any, unions of them)."""
    return _convert(obj, type, "$", strict)


def _convert(obj: Any, target: Any, path: str, strict: bool) -> Any:
    if isinstance(target, type) and issubclass(target, Struct):
        if not isinstance(obj, dict):
            raise ValidationError(f"Expected `object`, got `{_kind(obj)}`" + _at(path))
        hints = typing.get_type_hints(target)
        values = {}
        for name in target.__struct_fields__:
            if name in obj:
                values[name] = _convert(obj[name], hints[name], f"{path}.{name}", strict)
            elif name not in target.__struct_defaults__:
                raise ValidationError(f"Object missing required field `{name}`" + _at(path))
        if target.__struct_config__["forbid_unknown_fields"]:
            for name in obj:
                if name not in target.__struct_fields__:
                    raise ValidationError(f"Object contains unknown field `{name}`" + _at(path))
        try:
            return target(**values)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"{exc}" + _at(path)) from None
    if target is Any:
        return obj
    origin = typing.get_origin(target)
    if origin in (typing.Union, _UnionType):
        options = typing.get_args(target)
        for option in options:
            try:
                return _convert(obj, option, path, strict)
            except ValidationError:
                continue
        names = " | ".join(_type_name(option) for option in options)
        raise ValidationError(f"Expected `{names}`, got `{_kind(obj)}`" + _at(path))
    if target is None or target is type(None):
        if obj is None:
            return None
    elif target is bool:
        if isinstance(obj, bool):
            return obj
    elif target is int:
        if isinstance(obj, int) and not isinstance(obj, bool):
            return obj
        if isinstance(obj, float) and obj.is_integer() and not strict:
            return int(obj)
    elif target is float:
        if isinstance(obj, int | float) and not isinstance(obj, bool):
            return float(obj)
    elif target is str:
        if isinstance(obj, str):
            return obj
    else:
        raise NotImplementedError(f"the msgspec test double cannot convert into {target!r}")
    raise ValidationError(f"Expected `{_type_name(target)}`, got `{_kind(obj)}`" + _at(path))


_UnionType = type(int | str)


def _at(path: str) -> str:
    return "" if path == "$" else f" - at `{path}`"


def _type_name(target: Any) -> str:
    if target is None or target is type(None):
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(target, repr(target))


def _kind(obj: Any) -> str:
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "bool"
    if isinstance(obj, int):
        return "int"
    if isinstance(obj, float):
        return "float"
    if isinstance(obj, str):
        return "str"
    if isinstance(obj, dict):
        return "object"
    if isinstance(obj, list | tuple):
        return "array"
    return type(obj).__name__
