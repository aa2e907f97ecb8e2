"""The version registry: a Hive table, one row per published dt and side.

A version EXISTS only once its registry partition is written, and that write is the last
step of a publish (data first, register last; both through the atomic table layer).
Readers - the next day's alignment, neighbours, serving - only read registered versions.
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from py4j.protocol import Py4JJavaError
from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession

import embedlib
from embedlib import integrity, manifest, provenance, tables
from embedlib.config import Config
from embedlib.errors import EmbedlibError

REGISTRY_SCHEMA = (
    "side string, dim int, n_rows long, n_carried long, parent_dt string, root boolean, "
    "root_reason string, mode string, metrics_json string, transform array<double>, "
    "trainer_json string, code_version string, created_at timestamp, location string, "
    "fingerprint string"
)


class RegistryError(EmbedlibError):
    """A registered version cannot be read (missing data, unknown side)."""


@dataclass
class VersionRecord:
    side: str
    dim: int
    n_rows: int
    n_carried: int
    parent_dt: str | None
    root: bool
    root_reason: str | None
    mode: str
    metrics: dict
    transform: np.ndarray  # (e, e): published = raw @ transform
    trainer: dict = field(default_factory=dict)
    code_version: str = ""
    created_at: _dt.datetime | None = None
    location: str = ""
    # integrity's fingerprint of the published rows (ids and vectors; ids only for versions
    # registered before vectors were fingerprinted); None for versions registered before
    # fingerprints were recorded (their row count is still checked).
    fingerprint: str | None = None

    def to_row(self) -> tuple:
        d = asdict(self)
        d["metrics_json"] = json.dumps(json_safe(d.pop("metrics")), sort_keys=True)
        d["trainer_json"] = json.dumps(json_safe(d.pop("trainer")), sort_keys=True)
        d["transform"] = [float(v) for v in np.asarray(self.transform, dtype=np.float64).ravel()]
        d["created_at"] = self.created_at or _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
        names = [c.split()[0] for c in REGISTRY_SCHEMA.split(", ")]
        return tuple(d[n] for n in names)

    @classmethod
    def from_row(cls, row) -> VersionRecord:
        d = row.asDict()
        e = int(d["dim"])
        return cls(side=d["side"], dim=e, n_rows=d["n_rows"], n_carried=d["n_carried"],
                   parent_dt=d["parent_dt"], root=d["root"], root_reason=d["root_reason"],
                   mode=d["mode"], metrics=json.loads(d["metrics_json"] or "{}"),
                   transform=np.array(d["transform"], dtype=np.float64).reshape(e, e),
                   trainer=json.loads(d["trainer_json"] or "{}"), code_version=d["code_version"],
                   created_at=d["created_at"], location=d["location"],
                   fingerprint=d.get("fingerprint"))


def json_safe(value):
    """JSON-safe copy: numpy scalars to Python, NaN/Inf to None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def register(spark: SparkSession, cfg: Config, dt: str, records: list[VersionRecord]) -> None:
    """Commit the version of ``dt``: the last write of a publish.

    Then the published tables' run folders of dt that no registered version points at any
    more are removed; the folders of the version this one replaces (a rerun) are kept until
    the next registration of dt, for readers that resolved it just before.
    """
    replaced = registered_locations(spark, cfg, dt)
    df = spark.createDataFrame([r.to_row() for r in records], REGISTRY_SCHEMA)
    tables.write_partition(spark, df, tables.table_name(cfg.tables, "versions"), dt)
    manifest.write_manifests(spark, cfg, dt, records)  # what the lookup service follows
    for r in records:
        table = tables.embeddings_table(cfg.tables, r.side)
        tables.remove_orphan_runs(spark, table, dt, [r.location, replaced.get(r.side)])


def registered_locations(spark: SparkSession, cfg: Config, dt: str) -> dict[str, str]:
    """{side: data folder} of the registered version ``dt``; empty when dt is not registered."""
    df = tables.find_partition(spark, tables.table_name(cfg.tables, "versions"), dt)
    return {} if df is None else {r.side: r.location for r in df.select("side", "location").collect()}


def registered_dts(spark: SparkSession, cfg: Config) -> list[str]:
    return tables.list_partitions(spark, tables.table_name(cfg.tables, "versions"))


def read_version(spark: SparkSession, cfg: Config, dt: str) -> dict[str, VersionRecord]:
    """{side: record} of the registered version ``dt``."""
    rows = tables.read_partition(spark, tables.table_name(cfg.tables, "versions"), dt).collect()
    return {r.side: VersionRecord.from_row(r) for r in rows}


def previous_dt(spark: SparkSession, cfg: Config, dt: str) -> tuple[str | None, str | None]:
    """(latest registered dt before ``dt`` within publish.max_age_days, or None; why none)."""
    earlier = [d for d in registered_dts(spark, cfg) if d < dt]
    if not earlier:
        return None, "no previous version"
    age = (_dt.date.fromisoformat(dt) - _dt.date.fromisoformat(earlier[-1])).days
    max_age_days = cfg.publish.max_age_days
    if age > max_age_days:
        return None, f"previous version {earlier[-1]} is {age} days old (max_age_days={max_age_days})"
    return earlier[-1], None


def read_published(spark: SparkSession, cfg: Config, dt: str, side: str,
                   versions: dict[str, VersionRecord] | None = None, verify: bool = True):
    """The published vectors of a registered version and side, checked against the registry.

    ``versions``: ``read_version(spark, cfg, dt)`` when the caller has already read it.
    ``verify``: count the rows and fingerprint them (one job over the id and vector columns;
    the ids only for a version registered with an id-only fingerprint) and raise
    integrity.IntegrityError when they differ from the registry row (a lost or altered file).
    """
    versions = read_version(spark, cfg, dt) if versions is None else versions
    if side not in versions:
        raise RegistryError(f"version {dt} has no side {side!r} (sides: {', '.join(sorted(versions))})")
    record = versions[side]
    if not tables.path_exists(spark, record.location):
        raise RegistryError(
            f"version {dt} ({side}) is registered but its data at {record.location} is missing; "
            "restore it, or unregister the version (embedlib.registry.unregister) and rerun")
    what = f"version {dt} ({side}) at {record.location}"
    try:
        df = spark.read.parquet(record.location)
        if verify:
            integrity.verify(df, what, record.n_rows, record.fingerprint)
    except (Py4JJavaError, AnalysisException) as exc:  # a truncated or foreign file
        cause = str(exc).strip().splitlines()[0][:300]
        raise integrity.IntegrityError(f"{what} cannot be read: {cause}") from None
    return df, record


def unregister(spark: SparkSession, cfg: Config, dt: str) -> None:
    """Forget version ``dt``: its registry partition, then its manifests (a service that
    serves it falls back to the newest version left)."""
    tables.drop_partition(spark, tables.table_name(cfg.tables, "versions"), dt)
    manifest.remove_manifests(spark, cfg, dt)


def code_version() -> str:
    """Package version plus the git commit (``0.1.0+<sha>``, ``.dirty`` with local changes).

    The commit comes from the build info in the spark-submit zip (`make package`) when the
    package runs from one, else from git in the checkout.
    """
    info = provenance.build_info() or provenance.git_commit(Path(embedlib.__file__).parent)
    return provenance.version_label(embedlib.__version__, info)


def describe_versions(spark: SparkSession, cfg: Config, dts: list[str] | None = None) -> list[dict]:
    """One summary dict per registered (dt, side), checked against its data.

    ``problem`` is None for a version whose data matches its registry row, else why not
    (missing data, lost rows, another fingerprint); the caller decides what that means.
    """
    rows = []
    for dt in dts or registered_dts(spark, cfg):
        for side, rec in sorted(read_version(spark, cfg, dt).items()):
            n_read, problem = rec.n_rows, None
            try:
                read_published(spark, cfg, dt, side, {side: rec})
            except (RegistryError, integrity.IntegrityError) as exc:
                n_read, problem = getattr(exc, "rows_read", None), str(exc)
            m = rec.metrics
            rows.append({"dt": dt, "side": side, "rows": rec.n_rows, "rows_read": n_read,
                         "carried": rec.n_carried, "parent_dt": rec.parent_dt, "root_reason": rec.root_reason,
                         "mode": rec.mode, "cos_raw": m.get("cosine_raw_mean"),
                         "cos_stab": m.get("cosine_stabilized_mean"), "score_err": m.get("score_max_rel_err"),
                         "problem": problem})
    return rows
