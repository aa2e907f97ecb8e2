"""Step 3: raw vectors of dt (+ the parent version) -> stabilized vectors, then step 4 publishes.

Reads: the raw embedding tables of dt (or user-supplied sources, stabilize.items/other), the
registry and the parent's published vectors (checked against the registry), the train_runs
row of dt when there is one. The maths is in embedlib/alignment.py (and churn.py); writing the published
tables, the delta and the registry row is step 4, embedlib/steps/publish.py.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from embedlib import integrity, registry, tables
from embedlib.alignment import Stabilized, StabilizeError, TodayAndParent, stabilize
from embedlib.config import Config, VectorSourceConfig
from embedlib.log import Phases, get_logger, step
from embedlib.steps import publish
from embedlib.vector_files import FileSource

log = get_logger(__name__)


@dataclass
class Inputs:
    items: TodayAndParent
    other: TodayAndParent | None
    parent_dt: str | None
    parent: dict  # {side: registry.VersionRecord} of the parent version; empty for a root
    no_parent_reason: str | None
    trainer: dict


def read_vector_source(spark: SparkSession, src: VectorSourceConfig, name: str) -> DataFrame:
    """A user-supplied (id, vector) table as (id string, vector array<float>, count long)."""
    if src.format == "table":
        if not src.table or not tables.table_exists(spark, src.table):
            raise StabilizeError(f"stabilize.{name}.table {src.table!r} does not exist")
        df = spark.table(src.table)
        if src.dt:
            df = df.where(F.col(tables.PARTITION_COL) == src.dt)
    else:
        if not src.path or not tables.path_exists(spark, src.path):
            raise StabilizeError(f"stabilize.{name}.path {src.path!r} does not exist")
        df = spark.read.parquet(src.path)
    missing = [c for c in (src.id_col, src.vector_col) if c not in df.columns]
    if missing:
        raise StabilizeError(f"stabilize.{name}: no column {missing} (columns: {', '.join(df.columns)})")
    count = F.col("count").cast("long") if "count" in df.columns else F.lit(None).cast("long")
    df = df.select(F.col(src.id_col).cast("string").alias("id"),
                   F.col(src.vector_col).cast("array<float>").alias("vector"), count.alias("count"))
    dup = df.groupBy("id").count().where((F.col("count") > 1) | F.col("id").isNull()).limit(3).collect()
    if dup:
        raise StabilizeError(f"stabilize.{name}: ids must be unique and not null; "
                             f"e.g. {[(r.id, r['count']) for r in dup]} (id, occurrences)")
    return df


def _today(spark: SparkSession, cfg: Config, dt: str, side: str, src) -> tuple:
    """(today's vectors of ``side`` or None, their FileSource or None)."""
    if src is not None:
        df = read_vector_source(spark, src, "items" if side == "item" else "other")
        location, vector_col = (src.path, src.vector_col) if src.format == "parquet" else (None, None)
    else:
        table = tables.embeddings_table(cfg.tables, side, raw=True)
        df = tables.find_partition(spark, table, dt)
        if df is None:
            return None, None
        df = df.select("id", "vector", "count")
        location, vector_col = tables.partition_location(spark, table, dt), "vector"
    source = None
    if location and cfg.tables.vector_io == "arrow":
        id_col = src.id_col if src is not None else "id"
        source = FileSource.of(location, {"id": id_col, "vector": vector_col, "count": "count"},
                                      optional=("count",))
    return df, source


def extract(spark: SparkSession, cfg: Config, dt: str) -> Inputs:
    s = cfg.stabilize
    items_df, items_source = _today(spark, cfg, dt, "item", s.items)
    if items_df is None:
        raw_items = tables.embeddings_table(cfg.tables, "item", raw=True)
        raise StabilizeError(f"no item vectors for dt={dt}: {raw_items} has no partition for it "
                             "(run train_item2vec first) and stabilize.items is not set")
    other_df, other_source = (_today(spark, cfg, dt, s.other_side, s.other)
                              if s.other or s.other_side == "context" else (None, None))
    parent_dt, reason = registry.previous_dt(spark, cfg, dt)
    prev_items = prev_other = (None, None)
    parent = {}
    if parent_dt is not None:
        try:
            parent, prev_items, prev_other = _read_parent(spark, cfg, parent_dt, other_df is not None)
        except (integrity.IntegrityError, registry.RegistryError) as exc:
            if cfg.publish.on_damaged_parent != "new_root":
                raise type(exc)(f"{exc}; it cannot be the parent of dt={dt}: restore it, or set "
                                "publish.on_damaged_parent=new_root to start a new root") from None
            log.warning("parent %s is damaged, dt=%s becomes a new root: %s", parent_dt, dt, exc)
            parent_dt, reason = None, f"parent damaged: {exc}"
    if parent_dt is not None:
        log.info("parent version: %s (dim %d)", parent_dt, parent["item"].dim)
    else:
        log.info("no parent version (%s): this version is a root", reason)
    return Inputs(TodayAndParent("items", items_df, prev_items[0], items_source, prev_items[1]),
                  TodayAndParent(s.other_side, other_df, prev_other[0], other_source, prev_other[1])
                  if other_df is not None else None,
                  parent_dt, parent, reason, _trainer(spark, cfg, dt))


def _read_parent(spark: SparkSession, cfg: Config, parent_dt: str, with_other: bool):
    """(registry records, item vectors, other side's vectors or None) of the parent, each
    side checked against its registry row; the vectors as (DataFrame, FileSource or None)."""
    parent = registry.read_version(spark, cfg, parent_dt)

    def published(side):
        df = registry.read_published(spark, cfg, parent_dt, side, parent)[0]
        source = None
        if cfg.tables.vector_io == "arrow":
            source = FileSource.of(parent[side].location, {"id": "id", "vector": "vector"})
        return df, source

    prev_items = published("item")
    other_side = cfg.stabilize.other_side
    prev_other = (None, None)
    if with_other and other_side in parent:
        prev_other = published(other_side)
    return parent, prev_items, prev_other


def _trainer(spark: SparkSession, cfg: Config, dt: str) -> dict:
    df = tables.find_partition(spark, tables.table_name(cfg.tables, "train_runs"), dt)
    row = df.first() if df is not None else None
    return row.asDict() if row else {}


def transform(inputs: Inputs, cfg: Config, phases: Phases | None = None) -> Stabilized:
    parent_dim = inputs.parent["item"].dim if inputs.parent else None
    result = stabilize(inputs.items, inputs.other, cfg.stabilize, parent_dim, phases,
                       moved_threshold=cfg.publish.delta_cosine_threshold)
    if inputs.parent_dt is None and result.root_reason:
        result.root_reason = inputs.no_parent_reason or result.root_reason
    return result


def run(spark: SparkSession, cfg: Config, dt: str) -> dict:
    """Steps 3 and 4 of ``dt``: stabilize, then publish and register (embedlib/steps/publish.py)."""
    phases = Phases()
    with step(log, f"stabilize dt={dt}", spark) as info:
        with phases("extract"):
            inputs = extract(spark, cfg, dt)
        result = transform(inputs, cfg, phases)
        parent_frames = {"item": inputs.items.prev_df,
                         **({inputs.other.name: inputs.other.prev_df} if inputs.other else {})}
        try:
            records = publish.run(spark, cfg, dt, result, inputs.parent_dt, inputs.parent, parent_frames,
                                  inputs.trainer, phases)
        finally:
            result.release()
    item = records[0]
    return {**item.metrics, "parent_dt": item.parent_dt, "root_reason": result.root_reason,
            "rows": {r.side: r.n_rows for r in records}, "carried": {r.side: r.n_carried for r in records},
            "phase_seconds": phases.seconds, "spark_jobs": info.get("spark_jobs"), "seconds": info.get("seconds")}
