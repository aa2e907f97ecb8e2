"""Step 4: publish a stabilized version: the published tables, the delta, then the registry row.

Writes tables embeddings_<side> (today's vectors plus the parent's carried rows, see
embedlib/publication.py), the delta table, then the registry partition of dt, last: the
version exists from that write on (embedlib/registry.py). Run by the stabilize job
(jobs/stabilize.py), right after step 3 computed the vectors.
"""
from __future__ import annotations

import functools

from pyspark.sql import DataFrame, SparkSession

from embedlib import integrity, publication, registry, spark_passes, tables, vector_files
from embedlib.alignment import Stabilized
from embedlib.config import Config
from embedlib.log import Phases, get_logger

log = get_logger(__name__)


def run(spark: SparkSession, cfg: Config, dt: str, result: Stabilized, parent_dt: str | None,
        parent: dict[str, registry.VersionRecord], parent_frames: dict[str, DataFrame | None],
        trainer: dict, phases: Phases | None = None) -> list[registry.VersionRecord]:
    """Write every side's vectors (+ carried rows) and the delta, then register the version.

    ``parent``: the parent's registry records by side (empty for a root); ``parent_frames``:
    the parent's published vectors by side, None where the parent has no such side.
    ``phases`` gets the seconds of write_<side> (today's raw rows and the carried ones, the
    transform applied to today's as they are written),
    count_<side> (rows, carried, fingerprint of what was written), delta and register.
    """
    phases = phases if phases is not None else Phases()
    chained = result.root_reason is None  # same space as the parent: carry and diff against it
    m = result.metrics
    # The ids shared with the parent, where the alignment counted them: with the parent's
    # row count, the carried, new and evicted counts follow without an ids join.
    sides = [("item", result.raw_items, result.items_source, result.raw_items.select("id"), result.transform_items,
              parent_frames.get("item"), m.get("rows_joined"))]
    if result.raw_other is not None:
        sides.append((cfg.stabilize.other_side, result.raw_other, result.other_source, result.raw_other.select("id"),
                      result.transform_other, parent_frames.get(cfg.stabilize.other_side), m.get("rows_joined_other")))
    written = []
    # A rerun of a registered dt must not delete what the registry points at until the new
    # version is registered (registry.register removes the orphans then).
    registered = registry.registered_locations(spark, cfg, dt)
    dim = m["dim"]
    for side, df, source, ids_df, transform_matrix, parent_df, n_shared in sides:
        chained_side = chained and parent_df is not None
        n_unshared = parent[side].n_rows - n_shared if chained_side and n_shared is not None else None
        pub_df, schema, smoothing = _rows_to_write(spark, cfg, dt, df, source, ids_df,
                                                   parent_df if chained_side else None, n_unshared, dim)
        with phases(f"write_{side}"):
            location = tables.write_partition(spark, pub_df, tables.embeddings_table(cfg.tables, side), dt,
                                              keep=[registered.get(side)],
                                              grace_hours=cfg.tables.keep_orphan_runs_hours,
                                              arrow=cfg.tables.vector_io == "arrow",
                                              # today's raw rows are transformed (and smoothed) as
                                              # they are written
                                              batch_fn=spark_passes.transform_batches(
                                                  transform_matrix, "vector", keep_col="carried",
                                                  parent_col=publication.PARENT_VECTOR if smoothing < 1.0 else None,
                                                  smoothing=smoothing),
                                              schema=schema)
        pub_df = spark.read.parquet(location)
        with phases(f"count_{side}"):
            n, fingerprint, carried = integrity.counts_and_sum(pub_df, "carried")
        written.append((side, location, n, carried, transform_matrix, fingerprint))
        if side == "item":
            known = n_unshared is not None
            delta_df = publication.delta(side, pub_df, parent_df if chained else None, result.cosines_df,
                                     cfg.publish.delta_cosine_threshold, n,
                                     n_new=m["rows_items"] - n_shared if known else None,
                                     n_evicted=n_unshared - carried if known else None)
    with phases("delta"):
        delta_location = tables.write_partition(spark, delta_df, tables.table_name(cfg.tables, "deltas"), dt,
                                                arrow=cfg.tables.vector_io == "arrow")
        changes = {f"{r.side}_{r.change}": r["count"]
                   for r in spark.read.parquet(delta_location).groupBy("side", "change").count().collect()}
    metrics = {**result.metrics, "delta": changes}
    log.info("published %s; delta %s", ", ".join(f"{w[0]}: {w[2]} rows ({w[3]} carried)" for w in written),
             changes)
    parent_dt = None if result.root_reason else parent_dt
    records = [registry.VersionRecord(
        side=side, dim=result.metrics["dim"], n_rows=n, n_carried=c, parent_dt=parent_dt,
        root=parent_dt is None, root_reason=result.root_reason, mode=result.mode,
        metrics={**metrics, "evicted": changes.get(f"{side}_evicted", 0)}, transform=transform_matrix,
        trainer=trainer, code_version=registry.code_version(), location=location,
        fingerprint=fingerprint)
        for side, location, n, c, transform_matrix, fingerprint in written]
    with phases("register"):
        registry.register(spark, cfg, dt, records)
    return records


def _rows_to_write(spark: SparkSession, cfg: Config, dt: str, df: DataFrame, source, ids_df: DataFrame,
                   parent_df: DataFrame | None, n_unshared: int | None, dim: int) -> tuple:
    """(the rows to write for one side, the table's schema, the smoothing to apply as they are
    written): today's raw rows, read by the tasks from their files where they can; with a
    parent (``parent_df``, a chained side) its carried rows and, for temporal smoothing, its
    vector of each id alongside (``publication.with_parent_vectors``)."""
    schema = publication.as_published(df, dt).schema  # the table's
    encode = None
    if source is not None and cfg.tables.vector_io == "arrow":
        # The tasks read today's files and move each vector to the writer as one binary
        # block; carried rows are encoded likewise (publication.union_carried).
        df = source.binary_vectors(spark, dim, "vector")
        encode = functools.partial(vector_files.binary_frame, col_name="vector", dim=dim)
    pub_df = publication.as_published(df, dt)
    if parent_df is None:
        return pub_df, schema, 1.0
    pub_df = publication.union_carried(pub_df, parent_df, dt, cfg.publish.ttl_days, ids_df, n_unshared, encode)
    smoothing = cfg.stabilize.smoothing
    if smoothing < 1.0:
        pub_df = publication.with_parent_vectors(pub_df, parent_df)
    return pub_df, schema, smoothing
