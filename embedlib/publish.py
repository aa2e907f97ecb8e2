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


def as_published(df: DataFrame, dt: str) -> DataFrame:
    """Today's vectors (id, vector, count) in the published contract."""
    return df.select("id", "vector", "count", F.lit(False).alias("carried"),
                     F.lit(dt).alias("trained_dt")).select(*PUBLISHED_COLS)


def with_carried(today_df: DataFrame, parent_df: DataFrame, dt: str, ttl_days: int) -> DataFrame:
    """Today's rows plus the parent's rows absent today, last trained at most ``ttl_days`` ago.

    Both frames are in the published contract; ``id`` is unique in each.
    """
    # Ids first: only the (few) carried rows' vectors need to travel.
    carried_ids = (
        parent_df.select("id", "trained_dt")
        .join(today_df.select("id"), on="id", how="left_anti")
        .where(F.datediff(F.lit(dt), F.col("trained_dt")) <= ttl_days)
        .select("id")
    )
    carried_df = (
        parent_df.select(*PUBLISHED_COLS).join(carried_ids, on="id", how="left_semi")
        .withColumn("carried", F.lit(True))
        .select(*PUBLISHED_COLS)
    )
    return today_df.unionByName(carried_df)


def delta(side: str, published_df: DataFrame, parent_df: DataFrame | None,
          cosines_df: DataFrame | None, threshold: float) -> DataFrame:
    """Ids that changed since the parent: new, evicted, or moved by more than ``threshold``.

    ``moved``: 1 - cosine(today's stabilized vector, the parent's) > threshold, from
    ``cosines_df`` (id, stabilized), the per-id cosines the stabilize step computed on the
    shared ids. Without a parent every row is new (a full reload). Only ids are joined; the
    vectors of changed rows are looked up last.
    """
    vectors = published_df.select("id", "vector")
    if parent_df is None:
        return vectors.select(F.lit(side).alias("side"), "id", F.lit("new").alias("change"),
                              F.lit(None).cast("double").alias("cosine"), "vector")
    today_ids, parent_ids = published_df.select("id"), parent_df.select("id")
    no_cosine = F.lit(None).cast("double").alias("cosine")
    moved = (cosines_df.where(1.0 - F.col("stabilized") > threshold)
             .select("id", F.lit("moved").alias("change"), F.col("stabilized").alias("cosine")))
    new = today_ids.join(parent_ids, on="id", how="left_anti").select("id", F.lit("new").alias("change"), no_cosine)
    evicted = (parent_ids.join(today_ids, on="id", how="left_anti")
               .select("id", F.lit("evicted").alias("change"), no_cosine, F.lit(None).cast("array<float>").alias("vector")))
    changed = moved.unionByName(new).join(vectors, on="id", how="inner")
    return changed.unionByName(evicted).select(F.lit(side).alias("side"), "id", "change", "cosine", "vector")
