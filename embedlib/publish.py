"""Publishing transforms: carry-forward with TTL, and the per-dt delta for online stores.

Carry-forward is only meaningful because versions share one space: a vector published
yesterday and aligned into the chain is still comparable with today's vectors. It is never
done across a new root (different space).
"""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from embedlib import linalg

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
    absent_df = parent_df.select(*PUBLISHED_COLS).join(today_df.select("id"), on="id", how="left_anti")
    carried_df = (
        absent_df.where(F.datediff(F.lit(dt), F.col("trained_dt")) <= ttl_days)
        .withColumn("carried", F.lit(True))
        .select(*PUBLISHED_COLS)
    )
    return today_df.unionByName(carried_df)


def delta(side: str, published_df: DataFrame, parent_df: DataFrame | None, threshold: float) -> DataFrame:
    """Rows that changed since the parent: new, evicted, or moved by more than ``threshold``.

    ``moved`` means 1 - cosine(today, parent) > threshold for an id published in both.
    """
    today = published_df.select("id", F.col("vector").alias("v"))
    if parent_df is None:
        return today.select(F.lit(side).alias("side"), "id", F.lit("new").alias("change"),
                            F.lit(None).cast("double").alias("cosine"), F.col("v").alias("vector"))
    parent = parent_df.select("id", F.col("vector").alias("p"))
    dim = len(today.first()["v"])
    # One outer join; cosines on Arrow batches (null where the id is in one version only).
    joined = linalg.row_cosines(today.join(parent, on="id", how="full_outer"), "v", "p", dim,
                                {"cosine": None}, keep=["id", "v", "p"])
    change = (F.when(F.col("p").isNull(), "new").when(F.col("v").isNull(), "evicted")
              .when(1.0 - F.col("cosine") > threshold, "moved"))
    return (
        joined.withColumn("change", change)
        .where(F.col("change").isNotNull())
        .select(F.lit(side).alias("side"), "id", "change", "cosine", F.col("v").alias("vector"))
    )
