"""Step 3: raw vectors of dt (+ parent version) -> published, stabilized vectors + registry row.

Reads: the raw embedding tables of dt (or user-supplied sources, stabilize.items/other), the
registry and the parent's published vectors, the train_runs row of dt when there is one.
Writes: tables embeddings_<side> (today's vectors plus the parent's carried rows), the delta
table, then the registry partition of dt, last: the version exists from that write on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from embedlib import integrity, publish, registry, tables
from embedlib.config import Config, VectorSourceConfig
from embedlib.log import get_logger, step
from embedlib.registry import published_table
from embedlib.steps.train_item2vec import raw_table
from embedlib.stabilize import Side, Stabilized, StabilizeError, stabilize

log = get_logger(__name__)


@dataclass
class Inputs:
    items: Side
    other: Optional[Side]
    parent_dt: Optional[str]
    parent: dict  # {side: registry.VersionRecord} of the parent version; empty for a root
    no_parent_reason: Optional[str]
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


def _today(spark: SparkSession, cfg: Config, dt: str, side: str, src) -> Optional[DataFrame]:
    if src is not None:
        return read_vector_source(spark, src, "items" if side == "item" else "other")
    df = tables.find_partition(spark, raw_table(cfg, side), dt)
    return None if df is None else df.select("id", "vector", "count")


def extract(spark: SparkSession, cfg: Config, dt: str) -> Inputs:
    s = cfg.stabilize
    items_df = _today(spark, cfg, dt, "item", s.items)
    if items_df is None:
        raise StabilizeError(f"no item vectors for dt={dt}: {raw_table(cfg, 'item')} has no "
                             "partition for it (run train_item2vec first) and stabilize.items is not set")
    other_df = _today(spark, cfg, dt, s.other_side, s.other) if s.other or s.other_side == "context" else None
    parent_dt, reason = registry.previous_dt(spark, cfg, dt)
    prev_items = prev_other = None
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
    return Inputs(Side("items", items_df, prev_items),
                  Side(s.other_side, other_df, prev_other) if other_df is not None else None,
                  parent_dt, parent, reason, _trainer(spark, cfg, dt))


def _read_parent(spark: SparkSession, cfg: Config, parent_dt: str, with_other: bool):
    """(registry records, item vectors, other side's vectors or None) of the parent, each
    side checked against its registry row."""
    parent = registry.read_version(spark, cfg, parent_dt)
    prev_items = registry.read_published(spark, cfg, parent_dt, "item", parent)[0]
    other_side = cfg.stabilize.other_side
    prev_other = None
    if with_other and other_side in parent:
        prev_other = registry.read_published(spark, cfg, parent_dt, other_side, parent)[0]
    return parent, prev_items, prev_other


def _trainer(spark: SparkSession, cfg: Config, dt: str) -> dict:
    df = tables.find_partition(spark, tables.qualified(cfg.tables, cfg.tables.train_runs), dt)
    row = df.first() if df is not None else None
    return row.asDict() if row else {}


def transform(inputs: Inputs, cfg: Config) -> Stabilized:
    parent_dim = inputs.parent["item"].dim if inputs.parent else None
    result = stabilize(inputs.items, inputs.other, cfg.stabilize, parent_dim)
    if inputs.parent_dt is None and result.root_reason:
        result.root_reason = inputs.no_parent_reason or result.root_reason
    return result


def load(spark: SparkSession, result: Stabilized, inputs: Inputs, cfg: Config, dt: str) -> list:
    """Write every side's vectors (+ carried rows) and the delta, then register the version."""
    chained = result.root_reason is None  # same space as the parent: carry and diff against it
    m = result.metrics
    # The ids shared with the parent, where the alignment counted them: with the parent's
    # row count, the carried, new and evicted counts follow without an ids join.
    sides = [("item", result.items_df, result.item_ids, result.transform_items, inputs.items.prev_df,
              m.get("rows_joined"))]
    if result.other_df is not None:
        sides.append((cfg.stabilize.other_side, result.other_df, result.other_ids, result.transform_other,
                      inputs.other.prev_df, m.get("rows_joined_other")))
    written = []
    # A rerun of a registered dt must not delete what the registry points at until the new
    # version is registered (registry.register removes the orphans then).
    registered = registry.registered_locations(spark, cfg, dt)
    for side, df, ids_df, transform_matrix, parent_df, n_shared in sides:
        pub_df = publish.as_published(df, dt)
        chained_side = chained and parent_df is not None
        n_unshared = inputs.parent[side].n_rows - n_shared if chained_side and n_shared is not None else None
        if chained_side:
            pub_df = publish.with_carried(pub_df, parent_df, dt, cfg.publish.ttl_days, ids_df, n_unshared)
        location = tables.write_partition(spark, pub_df, published_table(cfg, side), dt,
                                          keep=[registered.get(side)],
                                          grace_hours=cfg.tables.keep_orphan_runs_hours)
        pub_df = spark.read.parquet(location)
        counts = pub_df.agg(F.count(F.lit(1)).alias("n"), F.sum(F.col("carried").cast("int")).alias("c"),
                            integrity.fingerprint_sum().alias("f")).first()
        written.append((side, location, counts.n, counts.c or 0, transform_matrix, integrity.as_text(counts.f)))
        if side == "item":
            known = n_unshared is not None
            delta_df = publish.delta(side, pub_df, parent_df if chained else None, result.cosines_df,
                                     cfg.publish.delta_cosine_threshold, counts.n,
                                     n_new=m["rows_items"] - n_shared if known else None,
                                     n_evicted=n_unshared - (counts.c or 0) if known else None)
    delta_location = tables.write_partition(spark, delta_df, tables.qualified(cfg.tables, cfg.tables.deltas), dt)
    changes = {f"{r.side}_{r.change}": r["count"]
               for r in spark.read.parquet(delta_location).groupBy("side", "change").count().collect()}
    metrics = {**result.metrics, "delta": changes}
    log.info("published %s; delta %s", ", ".join(f"{w[0]}: {w[2]} rows ({w[3]} carried)" for w in written),
             changes)
    parent = None if result.root_reason else inputs.parent_dt
    records = [registry.VersionRecord(
        side=side, dim=result.metrics["dim"], n_rows=n, n_carried=c, parent_dt=parent,
        root=parent is None, root_reason=result.root_reason, mode=result.mode,
        metrics={**metrics, "evicted": changes.get(f"{side}_evicted", 0)}, transform=transform_matrix,
        trainer=inputs.trainer, code_version=registry.code_version(), location=location,
        fingerprint=fingerprint)
        for side, location, n, c, transform_matrix, fingerprint in written]
    registry.register(spark, cfg, dt, records)
    return records


def run(spark: SparkSession, cfg: Config, dt: str) -> dict:
    with step(log, f"stabilize dt={dt}", spark):
        inputs = extract(spark, cfg, dt)
        result = transform(inputs, cfg)
        try:
            records = load(spark, result, inputs, cfg, dt)
        finally:
            if result.cosines_df is not None:
                result.cosines_df.unpersist()
    item = records[0]
    return {**item.metrics, "parent_dt": item.parent_dt, "root_reason": result.root_reason,
            "rows": {r.side: r.n_rows for r in records}, "carried": {r.side: r.n_carried for r in records}}
