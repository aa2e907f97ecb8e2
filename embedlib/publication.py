"""Publishing transforms: carry-forward with TTL, and the per-dt delta for online stores.

Carry-forward is only meaningful because versions share one space: a vector published
yesterday and aligned into the chain is still comparable with today's vectors. It is never
done across a new root (different space).
"""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

PUBLISHED_COLS = ["id", "vector", "count", "carried", "trained_dt"]
DELTA_COLS = ["side", "id", "change", "cosine", "vector"]
# Up to this many ids are broadcast to pick their rows out of a vector table where it lies;
# past it the ids are joined with a shuffle (which moves every vector of the table).
BROADCAST_IDS_MAX = 2_000_000


def rows_of_ids(vectors_df: DataFrame, ids_df: DataFrame, max_ids: int | None = None) -> DataFrame:
    """The rows of ``vectors_df`` whose id is in ``ids_df`` (with ids_df's other columns).

    ``max_ids``: a known upper bound on the number of ids (e.g. the rows of the table they
    come from); the ids are counted (one ids-only job) only when it is unknown or too big.
    """
    small = max_ids is not None and max_ids <= BROADCAST_IDS_MAX
    if not small:
        small = ids_df.count() <= BROADCAST_IDS_MAX
    return vectors_df.join(F.broadcast(ids_df) if small else ids_df, on="id", how="inner")


def as_published(df: DataFrame, dt: str) -> DataFrame:
    """Today's vectors (id, vector, count) in the published contract (count null where ``df``
    has none)."""
    count = F.col("count").cast("long") if "count" in df.columns else F.lit(None).cast("long")
    return df.select("id", "vector", count.alias("count"), F.lit(False).alias("carried"),
                     F.lit(dt).alias("trained_dt")).select(*PUBLISHED_COLS)


def union_carried(today_df: DataFrame, parent_df: DataFrame, dt: str, ttl_days: int,
                 today_ids: DataFrame | None = None, max_carried: int | None = None,
                 encode=None) -> DataFrame:
    """Today's rows plus the parent's rows absent today, last trained at most ``ttl_days`` ago.

    Both frames are in the published contract; ``id`` is unique in each. ``today_ids``: the
    same ids as ``today_df`` from a cheaper plan (today_df's vectors come out of an Arrow
    transform that Spark cannot prune, so selecting its ids would redo the transform).
    ``max_carried``: an upper bound on the carried rows when the caller knows one (parent
    rows minus the ids both versions share); otherwise the carried ids are counted first
    (an ids-only job). With none to carry the parent's vectors are not read at all.
    ``encode``: applied to the carried rows before the union, when today's vectors are in
    another encoding (``vector_files.binary_frame``).
    """
    today_ids = today_df.select("id") if today_ids is None else today_ids.select("id")
    # Ids first: the carried ids (items that dropped out of today's vocabulary, usually a
    # small share of the parent) pick their rows out of the parent without moving the rest.
    carried_ids = (
        parent_df.select("id", "trained_dt")
        .join(today_ids, on="id", how="left_anti")
        .where(F.datediff(F.lit(dt), F.col("trained_dt")) <= ttl_days)
        .select("id")
    )
    if max_carried is None:
        max_carried = carried_ids.count()
    if max_carried <= 0:
        return today_df
    carried_df = (
        rows_of_ids(parent_df.select(*PUBLISHED_COLS), carried_ids, max_carried)
        .withColumn("carried", F.lit(True))
        .select(*PUBLISHED_COLS)
    )
    return today_df.unionByName(carried_df if encode is None else encode(carried_df))


PARENT_VECTOR = "parent_vector"


def with_parent_vectors(published_df: DataFrame, parent_df: DataFrame) -> DataFrame:
    """``published_df`` with column ``PARENT_VECTOR``: the parent's published vector of each id,
    null where the parent has none (for temporal smoothing as the rows are written, see
    ``spark_passes.transform_batches``)."""
    parent_vectors = parent_df.select("id", F.col("vector").alias(PARENT_VECTOR))
    # A shuffle join: the parent's vectors are as many as today's, never broadcast.
    return published_df.join(parent_vectors.hint("shuffle_hash"), on="id", how="left")


def delta(side: str, published_df: DataFrame, parent_df: DataFrame | None,
          cosines_df: DataFrame | None, threshold: float, published_rows: int | None = None,
          n_new: int | None = None, n_evicted: int | None = None) -> DataFrame:
    """Ids that changed since the parent: new, evicted, or moved by more than ``threshold``.

    ``moved``: 1 - cosine(today's stabilized vector, the parent's) > threshold, from
    ``cosines_df`` (id, stabilized), the per-id cosines the stabilize step computed on the
    shared ids. Without a parent every row is new (a full reload). Only ids are joined; the
    vectors of changed rows are looked up last. ``n_new`` / ``n_evicted``: the counts when
    the caller knows them from row counts; a known 0 skips that ids join.
    """
    vectors = published_df.select("id", "vector")
    if parent_df is None:
        return vectors.select(F.lit(side).alias("side"), "id", F.lit("new").alias("change"),
                              F.lit(None).cast("double").alias("cosine"), "vector")
    today_ids, parent_ids = published_df.select("id"), parent_df.select("id")
    no_cosine = F.lit(None).cast("double").alias("cosine")
    changed_ids = (cosines_df.where(1.0 - F.col("stabilized") > threshold)
                   .select("id", F.lit("moved").alias("change"), F.col("stabilized").alias("cosine")))
    if n_new != 0:
        new = today_ids.join(parent_ids, on="id", how="left_anti").select("id", F.lit("new").alias("change"), no_cosine)
        changed_ids = changed_ids.unionByName(new)
    changed = rows_of_ids(vectors, changed_ids, published_rows)  # changed ids are today's ids
    if n_evicted != 0:
        evicted = (parent_ids.join(today_ids, on="id", how="left_anti")
                   .select("id", F.lit("evicted").alias("change"), no_cosine,
                           F.lit(None).cast("array<float>").alias("vector")))
        changed = changed.unionByName(evicted)
    return changed.select(F.lit(side).alias("side"), "id", "change", "cosine", "vector")
