"""The one config loader: YAML file + ``--set a.b=value`` overrides -> typed dataclasses.

Every key is declared below with its type and default. An unknown or mistyped key is an
error that names the key and where it came from (the file or the ``--set`` flag).
Relative paths in a config resolve against the working directory of the job.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from embedlib.errors import EmbedlibError


class ConfigError(EmbedlibError, ValueError):
    """A config file or override is invalid; the message names the key and its source."""


@dataclass
class SparkConfig:
    master: str = "local[*]"
    app_name: str = "embedlib"
    warehouse_dir: str = "warehouse"
    # Embedded Derby metastore folder; ignored when hive_metastore_uris is set.
    metastore_dir: str = "warehouse/metastore_db"
    hive_metastore_uris: Optional[str] = None
    shuffle_partitions: int = 8
    ui_enabled: bool = False
    driver_memory: str = "4g"
    log_level: str = "ERROR"
    # Any further spark.* settings, passed through as they are.
    extra: dict = field(default_factory=dict)


@dataclass
class TablesConfig:
    database: str = "embedlib"
    sequences: str = "sequences"
    item_stats: str = "item_stats"
    # Embedding tables are "<prefix>_<side>", side in item / context / user.
    raw_embeddings_prefix: str = "embeddings_raw"
    embeddings_prefix: str = "embeddings"
    versions: str = "versions"
    # One row per dt: the trainer's metadata (parameters, vocabulary, speed, versions).
    train_runs: str = "train_runs"
    deltas: str = "embedding_deltas"
    neighbors: str = "neighbors"


@dataclass
class ColumnsConfig:
    user: str = "user_id"
    item: str = "item_id"
    time: str = "ts"
    event_type: Optional[str] = None
    weight: Optional[str] = None


@dataclass
class InputConfig:
    format: str = "csv"
    path: Optional[str] = None
    table: Optional[str] = None
    csv_header: bool = True
    csv_delimiter: str = ","
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)
    time_unit: str = "s"
    # Keep only these event types (needs columns.event_type); empty keeps all.
    event_types: list = field(default_factory=list)
    # Drop events whose weight is below this (needs columns.weight); null keeps all.
    min_weight: Optional[float] = None

    def __post_init__(self):
        _check_choice("input.format", self.format, ("csv", "parquet", "table"))
        _check_choice("input.time_unit", self.time_unit, ("s", "ms", "timestamp"))


@dataclass
class SequencesConfig:
    lookback_days: int = 30
    # A gap strictly greater than this starts a new session.
    session_gap_seconds: int = 1800
    max_session_length: int = 50
    min_sequence_length: int = 2
    # Item admission: items with fewer events than this in the window are removed.
    min_count: int = 2
    # Events later than now + this are bad rows ("future_time").
    future_tolerance_seconds: int = 86400
    # Fixed "now" (ISO timestamp) for reproducible runs; null means the wall clock.
    now: Optional[str] = None

    def __post_init__(self):
        for name in ("lookback_days", "max_session_length", "min_sequence_length", "min_count"):
            if getattr(self, name) < 1:
                raise ConfigError(f"sequences.{name} must be >= 1, got {getattr(self, name)}")
        if self.session_gap_seconds < 0:
            raise ConfigError("sequences.session_gap_seconds must be >= 0")


@dataclass
class Config:
    env: str = "local"
    spark: SparkConfig = field(default_factory=SparkConfig)
    tables: TablesConfig = field(default_factory=TablesConfig)
    input: InputConfig = field(default_factory=InputConfig)
    sequences: SequencesConfig = field(default_factory=SequencesConfig)
    # Where the config came from (file and overrides), for logs; not a YAML key.
    source: str = field(default="<defaults>", metadata={"yaml": False})


def _check_choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def load_config(path: str | Path, overrides: Optional[list[str]] = None) -> Config:
    """Load ``path`` and apply ``--set key=value`` overrides (values parsed as YAML)."""
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
    _build(Config, raw, "", str(path))  # errors name the file before overrides blur it
    for item in overrides or []:
        _apply_override(raw, item)
    cfg = _build(Config, raw, "", f"{path} with --set overrides" if overrides else str(path))
    cfg.source = str(path) + "".join(f" --set {o}" for o in overrides or [])
    return cfg


def config_from_dict(raw: dict, source: str = "<dict>") -> Config:
    """Typed config from a plain dict (tests, notebooks)."""
    cfg = _build(Config, raw, "", source)
    cfg.source = source
    return cfg


def _apply_override(raw: dict, item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set spark.master=local[2]")
    parts = key.strip().split(".")
    cls: Any = Config
    for i, part in enumerate(parts):
        fields = _yaml_fields(cls)
        if part not in fields:
            raise ConfigError(f"--set {key}: unknown key {'.'.join(parts[:i + 1])!r}")
        cls = fields[part]
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
    node[parts[-1]] = yaml.safe_load(value) if value.strip() else None


def _yaml_fields(cls) -> dict:
    if not dataclasses.is_dataclass(cls):
        return {}
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.metadata.get("yaml", True)}


def _build(cls, raw: Any, prefix: str, source: str):
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
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, key, source)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, key + ".", source)
    if isinstance(value, (_dt.date, _dt.datetime)) and tp is str:
        return value.isoformat()
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


def as_dict(cfg: Any) -> dict:
    """Plain-dict view of a config (for logging and version records)."""
    return dataclasses.asdict(cfg)
