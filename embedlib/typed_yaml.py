"""YAML mappings to typed dataclasses, the machinery under ``embedlib.config``.

A dataclass's fields are its keys (a field with ``metadata={"yaml": False}`` is not one);
their annotations are the types a value is checked against and coerced to (int, float, str,
bool, list, dict, a nested dataclass, or one of them or None). An unknown or mistyped key
is a ConfigError that names the key and where it came from.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from embedlib.errors import EmbedlibError


class ConfigError(EmbedlibError, ValueError):
    """A config file or override is invalid; the message names the key and its source."""


def check_choice(key: str, value: Any, choices: tuple, error: type = ConfigError) -> None:
    """Raise ``error`` naming ``key`` and the allowed values unless ``value`` is one of them."""
    if value not in choices:
        raise error(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def check_at_least(section: str, obj: Any, names: tuple, minimum: int) -> None:
    """Raise ConfigError naming ``section.name`` for the first of ``names`` below ``minimum``."""
    for name in names:
        if getattr(obj, name) < minimum:
            raise ConfigError(f"{section}.{name} must be >= {minimum}, got {getattr(obj, name)}")


def read_mapping(path: str | Path) -> dict:
    """The top-level mapping of the YAML file at ``path`` (ConfigError naming the file when
    it is missing, not YAML or not a mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with path.open() as fh:
        try:
            raw = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def apply_override(root: type, raw: dict, item: str) -> None:
    """Set ``raw``'s key ``a.b.c`` from ``a.b.c=value`` (value parsed as YAML), checking the key
    against the dataclass ``root``."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set spark.master=local[2]")
    parts = key.strip().split(".")
    cls: Any = root
    for i, part in enumerate(parts):
        fields = _yaml_fields(cls)
        if part not in fields:
            known = (f"known keys here: {', '.join(sorted(fields))}" if fields
                     else f"{'.'.join(parts[:i])} is a value, not a section")
            raise ConfigError(f"--set {key}: unknown key {'.'.join(parts[:i + 1])!r} ({known})")
        cls = _unwrap_optional(fields[part])
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
    node[parts[-1]] = yaml.safe_load(value) if value.strip() else None


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def _yaml_fields(cls) -> dict:
    if not dataclasses.is_dataclass(cls):
        return {}
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.metadata.get("yaml", True)}


def build(cls, raw: Any, prefix: str, source: str):
    """An instance of dataclass ``cls`` from mapping ``raw`` (keys named from ``prefix``)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'top level'} must be a mapping")
    fields = _yaml_fields(cls)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {prefix + str(unknown[0])!r}"
            f" (known keys here: {', '.join(sorted(fields))})"
        )
    kwargs = {name: _coerce(fields[name], raw[name], prefix + name, source) for name in raw}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _coerce(tp: Any, value: Any, key: str, source: str):
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return None if value is None else _coerce(_unwrap_optional(tp), value, key, source)
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value if value is not None else {}, key + ".", source)
    if isinstance(value, (_dt.date, _dt.datetime)) and tp is str:
        return value.isoformat()
    if isinstance(value, bool) and tp is str:  # YAML's true/false where a word is expected
        return str(value).lower()
    expected = {int: (int,), float: (int, float), str: (str,), bool: (bool,),
                list: (list,), dict: (dict,)}.get(origin or tp)
    ok = expected is not None and isinstance(value, expected)
    if ok and tp in (int, float) and isinstance(value, bool):
        ok = False
    if not ok:
        raise ConfigError(
            f"{source}: key {key!r} must be {getattr(tp, '__name__', tp)}, "
            f"got {type(value).__name__} {value!r}"
        )
    return float(value) if tp is float else value
