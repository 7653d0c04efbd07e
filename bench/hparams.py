"""Hyperparameters: frozen dataclasses, profile overrides, and ``--set name=value`` parsed as JSON.

Values are never eval'd: JSON is parsed, then checked against the dataclass field's type and against rules that
hold for every plugin (``check_value``): numbers are finite and not negative, and a count stays a count.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from typing import Any

from bench.errors import UsageError


def _check_type(value: Any, hint: Any, where: str) -> Any:
    """Return ``value`` converted to ``hint`` where lossless (int -> float, list -> tuple), else raise."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check_type(value, option, where)
            except UsageError:
                pass
        raise UsageError(f"{where}: {value!r} is not a {hint}")
    if origin is typing.Literal:
        if value in typing.get_args(hint):
            return value
        raise UsageError(f"{where}: {value!r} is not one of {list(typing.get_args(hint))}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(_check_type(v, item, where) for v in value)
    if hint is type(None):
        if value is None:
            return None
        raise UsageError(f"{where}: expected null, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise UsageError(f"{where}: expected a number, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)  # JSON spells 1e6 as a float; an integral one is the integer it names
        raise UsageError(f"{where}: expected an integer, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"{where}: expected true or false, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise UsageError(f"{where}: expected a string, got {value!r}")
    raise UsageError(f"{where}: unsupported field type {hint}")


def parse_value(text: str, hint: Any) -> Any:
    """JSON first; a bare word is accepted as a string only where the field takes strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # _check_type rejects it unless the field is a str


def _spell(value: Any) -> str:
    """A value as the user wrote it in JSON (NaN, Infinity, null, true)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _check_finite(value: Any, where: str) -> None:
    """Python's JSON accepts NaN, Infinity and 1e999 (= Infinity); no hyperparameter means any of them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{where}: {_spell(value)} is not a finite number; give a finite value")
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_finite(item, where)
    elif isinstance(value, dict):
        for item in value.values():
            _check_finite(item, where)


# Integer fields that count something (sizes, subsets, steps, epochs, batches...): a None default means "all"
# or "automatic", any given integer must be at least 1. Fields with an integer default are told by the default.
SIZE_NAME = re.compile(r"^(n|k|n_\w+|\w+_n|\w*size|\w*steps|\w*epochs|\w*iterations|\w*restarts|\w*queries"
                       r"|\w*batches|\w*candidates|\w*width|\w*length|\w*tries|\w*prompts?|\w*seeds)$")


def _min_int(field: dataclasses.Field) -> int:
    """The smallest integer the field accepts, derived from its default: a positive default makes the field a
    count (>= 1: zero would train, attack or evaluate nothing); a default of 0 allows 0; a None default allows
    None, and 1 and above when the name says it counts something (``SIZE_NAME``), else 0 and above."""
    default = field.default
    if isinstance(default, int) and not isinstance(default, bool):
        return 1 if default > 0 else 0
    return 1 if SIZE_NAME.match(field.name) else 0


def check_value(field: dataclasses.Field, value: Any, where: str, nullable: bool = False) -> None:
    """The rules every plugin's hyperparameters obey, after the type check: finite, not negative, and a
    count (see ``_min_int``) at least 1."""
    _check_finite(value, where)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if value < 0:
        # Every hyperparameter of the suite is a count, size, rate, weight or budget: a negative one would
        # silently train or attack nothing.
        raise UsageError(f"{where}: {_spell(value)} is negative")
    if isinstance(value, int) and value < _min_int(field):
        none = " (or null)" if nullable else ""
        raise UsageError(f"{where}: {value} is too small: it counts something and must be at least 1{none}")


def build_params(cls: type, plugin: str, overrides: dict[str, Any]) -> Any:
    """Instantiate ``cls`` (a frozen dataclass) with validated overrides."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in overrides.items():
        if key not in fields:
            raise UsageError(f"{plugin} has no hyperparameter {key!r} (it has: {', '.join(sorted(fields)) or 'none'})")
        where = f"{plugin}.{key}"
        _check_finite(value, where)  # before the type check, which would only say "not an integer"
        values[key] = _check_type(value, hints[key], where)
        check_value(fields[key], values[key], where, nullable=type(None) in typing.get_args(hints[key]))
    return cls(**values)


def parse_sets(items: list[str]) -> list[tuple[str | None, str, str]]:
    """``plugin.field=value`` or ``field=value`` -> (plugin or None, field, raw value)."""
    parsed = []
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set {item!r}: expected name=value")
        name, raw = item.split("=", 1)
        plugin, _, field = name.rpartition(".")
        if not field:
            raise UsageError(f"--set {item!r}: empty name")
        parsed.append((plugin or None, field, raw))
    return parsed


def resolve(cls_by_plugin: dict[str, type], profile: str, sets: list[str]) -> dict[str, Any]:
    """Params for each selected plugin: defaults, then the profile's overrides, then ``--set``.

    ``field=value`` applies to every selected plugin that has the field (at least one must);
    ``plugin.field=value`` to that plugin only.
    """
    overrides: dict[str, dict[str, Any]] = {
        name: dict(cls.profiles.get(profile, {})) for name, cls in cls_by_plugin.items()
    }
    for plugin, field, raw in parse_sets(sets):
        if plugin is not None:
            if plugin not in cls_by_plugin:
                raise UsageError(f"--set {plugin}.{field}: {plugin!r} is not selected in this run")
            targets = [plugin]
        else:
            targets = [n for n, c in cls_by_plugin.items()
                       if field in {f.name for f in dataclasses.fields(c.Params)}]
            if not targets:
                raise UsageError(f"--set {field}: no selected plugin has a hyperparameter {field!r}")
        for target in targets:
            hint = typing.get_type_hints(cls_by_plugin[target].Params).get(field)
            overrides[target][field] = parse_value(raw, hint)
    return {name: build_params(cls.Params, name, overrides[name]) for name, cls in cls_by_plugin.items()}


def as_dict(params: Any) -> dict[str, Any]:
    """JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(params)))
