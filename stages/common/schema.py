"""Strict conversion of plain YAML data into typed dataclasses.

Every error names the dotted key path (``split.fractions.train``) and what is
allowed, so a typo in params.yaml fails loudly instead of silently falling back
to a default. Constraints live in field metadata, next to the field:

    lr: float = field(default=1e-3, metadata=bounds(gt=0))
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin


class ParamsError(ValueError):
    """A params.yaml value that is missing, unknown, of the wrong type or out of range."""

    def __init__(self, path: str, message: str, *, line: int | None = None, file: str | None = None):
        self.path = path
        self.message = message
        self.line = line   # params.yaml line of the key (or of its nearest parent), when known
        self.file = file
        super().__init__(f"{path}: {message}" if path else message)


def bounds(*, ge=None, gt=None, le=None, lt=None, **extra) -> dict:
    """Field metadata for numeric bounds (inclusive ge/le, exclusive gt/lt)."""
    return {"ge": ge, "gt": gt, "le": le, "lt": lt, **extra}


FRACTION = bounds(ge=0.0, le=1.0)
PROBABILITY = bounds(ge=0.0, le=1.0)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {_type_name(get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _check_bounds(value: Any, meta: dict, path: str) -> None:
    checks = (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
              ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<"))
    for key, ok, sign in checks:
        limit = meta.get(key)
        if limit is not None and isinstance(value, (int, float)) and not ok(value, limit):
            raise ParamsError(path, f"must be {sign} {limit} (got {value!r})")


def convert(tp: Any, value: Any, path: str) -> Any:
    """Convert ``value`` to type ``tp`` or raise ParamsError naming ``path``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in get_args(tp):
            raise ParamsError(path, f"must be one of {_type_name(tp)} (got {value!r})")
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            try:
                return convert(arg, value, path)
            except ParamsError as err:
                errors.append(err)
        raise ParamsError(path, f"must be {_type_name(tp)} (got {value!r})")
    if tp is type(None):
        if value is not None:
            raise ParamsError(path, f"must be null (got {value!r})")
        return None
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ParamsError(path, f"must be {_type_name(tp)} (got {value!r})")
        (item_tp, *_) = get_args(tp) or (Any,)
        items = [convert(item_tp, v, _join(path, i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(path, f"must be {_type_name(tp)} (got {value!r})")
        key_tp, val_tp = get_args(tp)
        return {convert(key_tp, k, path): convert(val_tp, v, _join(path, k)) for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(path, f"must be a number (got {value!r})")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(path, f"must be an integer (got {value!r})")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(path, f"must be true or false (got {value!r})")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(path, f"must be a string (got {value!r})")
        return value
    raise TypeError(f"schema type {tp!r} at {path} is not supported")


def from_dict(cls: type, data: Any, path: str = ""):
    """Build dataclass ``cls`` from a mapping; unknown keys and bad values raise ParamsError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(path, f"must be a mapping (got {data!r})")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ParamsError(_join(path, unknown[0]), f"unknown key; allowed: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, field in fields.items():
        key_path = _join(path, name)
        if name not in data:
            no_default = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            if no_default:
                raise ParamsError(key_path, f"is required ({_type_name(hints[name])})")
            continue
        value = convert(hints[name], data[name], key_path)
        _check_bounds(value, field.metadata, key_path)
        kwargs[name] = value
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path)  # cross-field rules, e.g. fractions that must sum to 1
    return obj


def to_dict(obj) -> Any:
    """Plain-data view of a (nested) dataclass, for fingerprints and checkpoints."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
