"""Strict, typed configuration: nested dataclasses loaded from plain dicts or YAML.

Every key is checked: an unknown key raises :class:`~meddiff.errors.ConfigError` naming its dotted
path, the valid keys and the closest match; values are type checked against the dataclass
annotations (``int``, ``float``, ``bool``, ``str``, ``Optional``/``X | None``, ``Literal``,
``tuple``, ``list``, ``dict[str, X]`` and nested dataclasses). An ``int`` is accepted where a
``float`` is expected; a ``bool`` is never accepted as a number; a float must be finite (NaN
and infinities pass no range check, so they are refused here). Missing required fields are
errors, and so is a value the dataclass's own checks trip over (a zero divisor, an empty
list): every problem is one line.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from meddiff.errors import ConfigError

T = TypeVar("T")

_SCALARS = {int: "int", float: "float", bool: "bool", str: "str", type(None): "None"}


def _join(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _show(value: object) -> str:
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{type(value).__name__} {text}"


def _type_name(tp: Any) -> str:
    if tp in _SCALARS:
        return _SCALARS[tp]
    if dataclasses.is_dataclass(tp):
        return f"mapping ({tp.__name__})"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin in (list, tuple):
        return "list"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert_scalar(tp: type, value: Any, path: str) -> Any:
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        type(None): value is None,
    }[tp]
    if not ok:
        raise ConfigError(f"{path}: expected {_SCALARS[tp]}, got {_show(value)}")
    if tp is not float:
        return value
    number = float(value) if abs(value) < 1e308 else math.inf  # ints beyond the float range
    if not math.isfinite(number):
        raise ConfigError(f"{path}: expected a finite number, got {_show(value)}")
    return number


def _convert_union(args: tuple, value: Any, path: str) -> Any:
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    if len(options) == 1:
        return _convert(options[0], value, path)
    for option in options:
        try:
            return _convert(option, value, path)
        except ConfigError:
            continue
    raise ConfigError(f"{path}: expected {_type_name(typing.Union[args])}, got {_show(value)}")


def _convert_literal(args: tuple, value: Any, path: str) -> Any:
    for allowed in args:
        if type(value) is type(allowed) and value == allowed:
            return value
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [a for a in args if isinstance(a, str)], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    choices = ", ".join(repr(a) for a in args)
    raise ConfigError(f"{path}: expected one of {choices}, got {value!r}{hint}")


def _convert_sequence(tp: Any, value: Any, path: str) -> Any:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path}: expected a list, got {_show(value)}")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        item = args[0] if args else Any
        return [_convert(item, v, _join(path, i)) for i, v in enumerate(value)]
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(args[0], v, _join(path, i)) for i, v in enumerate(value))
    if args and len(args) != len(value):
        raise ConfigError(f"{path}: expected a list of {len(args)} items, got {len(value)}")
    items = args or (Any,) * len(value)
    return tuple(_convert(a, v, _join(path, i)) for i, (a, v) in enumerate(zip(items, value)))


def _convert_dict(tp: Any, value: Any, path: str) -> dict:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: expected a mapping, got {_show(value)}")
    args = typing.get_args(tp)
    item = args[1] if args else Any
    out = {}
    for key, v in value.items():
        if not isinstance(key, str):
            raise ConfigError(f"{path}: keys must be strings, got {_show(key)}")
        out[key] = _convert(item, v, _join(path, key))
    return out


def _convert(tp: Any, value: Any, path: str) -> Any:
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if tp in _SCALARS:
        return _convert_scalar(tp, value, path)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(typing.get_args(tp), value, path)
    if origin is Literal:
        return _convert_literal(typing.get_args(tp), value, path)
    if origin in (list, tuple) or tp in (list, tuple):
        return _convert_sequence(tp, value, path)
    if origin is dict or tp is dict:
        return _convert_dict(tp, value, path)
    raise TypeError(f"config field {path!r}: unsupported annotation {tp!r}")


def _unknown_key_message(key: object, path: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
    hint = f" (did you mean {_join(path, close[0])!r}?)" if close else ""
    return f"unknown key {_join(path, key)!r}{hint}; valid keys: {', '.join(valid)}"


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build the dataclass ``cls`` (recursively) from a plain mapping, checking keys and types.

    ``path`` is the dotted location of ``data`` in the whole config, used in error messages.
    Raises :class:`ConfigError` for a non-mapping, an unknown or missing key, a wrong type, a
    non-finite float, or a value ``cls``'s own checks fail on (their arithmetic, index and value
    errors are folded into the one line).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"from_dict needs a dataclass type, got {cls!r}")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ConfigError(_unknown_key_message(key, path, list(fields)))
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], _join(path, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {_join(path, name)!r}")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path else str(err)) from None
    except (ArithmeticError, LookupError, ValueError) as err:  # e.g. a zero divisor, no levels
        where = path or cls.__name__
        raise ConfigError(f"{where}: invalid values ({type(err).__name__}: {err})") from None


def to_dict(obj: Any) -> Any:
    """Turn a (nested) dataclass into plain dicts/lists/scalars, the inverse of :func:`from_dict`.

    Tuples become lists so the result can be written as YAML or JSON.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML loader that rejects duplicate keys in a mapping."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file safely; missing files and syntax errors raise a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(str(err.problem or err.context or "invalid YAML").split())
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: YAML syntax error: {' '.join(str(err).split())}") from None


def load_yaml(path: str | Path, cls: type[T]) -> T:
    """Load the YAML file ``path`` into the dataclass ``cls`` with :func:`from_dict` checks.

    Every error is a one-line :class:`ConfigError` starting with the file name.
    """
    data = read_yaml(path)
    data = {} if data is None else data
    try:
        return from_dict(cls, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
