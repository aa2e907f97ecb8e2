"""Step 3: raw vectors of dt (+ parent version) -> published, stabilized vectors + registry row.

Reads: the raw embedding tables of dt (or user-supplied sources, stabilize.items/other), the
registry and the parent's published vectors, the train_runs row of dt when there is one.
Writes: tables embeddings_<side> (dt partition), then the registry partition of dt, last.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from embedlib import registry, tables
from embedlib.config import Config, VectorSourceConfig
from embedlib.log import get_logger, step
from embedlib.stabilize import Side, Stabilized, StabilizeError, stabilize

log = get_logger(__name__)

PUBLISHED_COLS = ["id", "vector", "count", "carried", "trained_dt"]


@dataclass
class Inputs:
    items: Side
    other: Optional[Side]
    parent_dt: Optional[str]
    parent_dim: Optional[int]
    no_parent_reason: Optional[str]
    trainer: dict


def raw_table(cfg: Config, side: str) -> str:
    return tables.qualified(cfg.tables, f"{cfg.tables.raw_embeddings_prefix}_{side}")


def published_table(cfg: Config, side: str) -> str:
    return tables.qualified(cfg.tables, f"{cfg.tables.embeddings_prefix}_{side}")


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


def _today(spark: SparkSession, cfg: Config, dt: str, side: str, src) -> Optional[DataFrame]:
    if src is not None:
        return read_vector_source(spark, src, "items" if side == "item" else "other")
    table = raw_table(cfg, side)
    if dt not in tables.list_partitions(spark, table):
        return None
    return tables.read_partition(spark, table, dt).select("id", "vector", "count")


def extract(spark: SparkSession, cfg: Config, dt: str) -> Inputs:
    s = cfg.stabilize
    items_df = _today(spark, cfg, dt, "item", s.items)
    if items_df is None:
        raise StabilizeError(f"no item vectors for dt={dt}: {raw_table(cfg, 'item')} has no "
                             "partition for it (run train_item2vec first) and stabilize.items is not set")
    other_df = _today(spark, cfg, dt, s.other_side, s.other) if s.other or s.other_side == "context" else None
    parent_dt, reason = registry.previous_dt(spark, cfg, dt, cfg.publish.max_age_days)
    prev_items = prev_other = parent_dim = None
    if parent_dt is not None:
        prev_items, record = registry.read_published(spark, cfg, parent_dt, "item")
        parent_dim = record.dim
        if other_df is not None and s.other_side in registry.read_version(spark, cfg, parent_dt):
            prev_other = registry.read_published(spark, cfg, parent_dt, s.other_side)[0]
        log.info("parent version: %s (dim %d)", parent_dt, parent_dim)
    else:
        log.info("no parent version (%s): this version is a root", reason)
    return Inputs(Side("items", items_df, prev_items),
                  Side(s.other_side, other_df, prev_other) if other_df is not None else None,
                  parent_dt, parent_dim, reason, _trainer(spark, cfg, dt))


def _trainer(spark: SparkSession, cfg: Config, dt: str) -> dict:
    table = tables.qualified(cfg.tables, cfg.tables.train_runs)
    if dt not in tables.list_partitions(spark, table):
        return {}
    row = tables.read_partition(spark, table, dt).first()
    return row.asDict() if row else {}


def transform(inputs: Inputs, cfg: Config) -> Stabilized:
    result = stabilize(inputs.items, inputs.other, cfg.stabilize, inputs.parent_dim)
    if inputs.parent_dt is None and result.root_reason:
        result.root_reason = inputs.no_parent_reason or result.root_reason
    return result


def published(df: DataFrame, dt: str) -> DataFrame:
    return df.select("id", "vector", "count", F.lit(False).alias("carried"),
                     F.lit(dt).alias("trained_dt")).select(*PUBLISHED_COLS)


def load(spark: SparkSession, result: Stabilized, inputs: Inputs, cfg: Config, dt: str) -> list:
    """Write every side's vectors, then register the version (the commit point)."""
    sides = [("item", result.items_df, result.transform_items)]
    if result.other_df is not None:
        sides.append((cfg.stabilize.other_side, result.other_df, result.transform_other))
    parent = None if result.root_reason else inputs.parent_dt
    records = []
    for side, df, transform_matrix in sides:
        location = tables.write_partition(spark, published(df, dt), published_table(cfg, side), dt)
        n_rows = spark.read.parquet(location).count()
        records.append(registry.VersionRecord(
            side=side, dim=result.metrics["dim"], n_rows=n_rows, n_carried=0, parent_dt=parent,
            root=parent is None, root_reason=result.root_reason, mode=result.mode,
            metrics=result.metrics, transform=transform_matrix, trainer=inputs.trainer,
            code_version=registry.code_version(), location=location))
    registry.register(spark, cfg, dt, records)
    return records


def run(spark: SparkSession, cfg: Config, dt: str) -> dict:
    with step(log, f"stabilize dt={dt}", spark):
        inputs = extract(spark, cfg, dt)
        result = transform(inputs, cfg)
        records = load(spark, result, inputs, cfg, dt)
    return {**result.metrics, "parent_dt": records[0].parent_dt, "root_reason": result.root_reason,
            "rows": {r.side: r.n_rows for r in records}}
