"""Item co-occurrence counts and the shifted PPMI matrix, as Spark frames (never dense).

Counts: for every sequence and every pair of positions a < b with b - a <= window, w(b - a)
is added to #(i_a, i_b) and to #(i_b, i_a) (w = 1, or 1 / distance). #(i) = sum over c of
#(i, c); D = the sum of all counts.

SPPMI(i, c) = max(0, log(#(i, c) D / (#(i) #_alpha(c))) - log(shift)), with the smoothed
context count #_alpha(c) = D #(c)^alpha / sum #(c')^alpha (alpha = 1: none). Only positive
entries are kept: a frame ``row string, col string, value double``, one row per entry.

Sums of weights are taken as decimals: decimal addition is exact, so every count (and D)
is the same whatever the order Spark adds the rows in, i.e. whatever the partitioning.
See docs/pipeline.md ("The count-based trainer").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

# Exact sums (see the module docstring); 20 integer digits hold any realistic count.
EXACT = "decimal(38,18)"


@dataclass(frozen=True)
class CountSpec:
    """What ``cooccurrence_counts`` counts.

    window : int
        Pairs at most this many positions apart.
    weighting : {"uniform", "distance"}
        w(d) = 1, or 1 / d.
    min_count : int
        Item admission: items with fewer events than this in the sequences are removed
        before pairing (as gensim drops them from its sentences).
    max_length : int
        Only the first ``max_length`` items of a longer sequence are paired (one very long
        sequence would otherwise make one task's pairs grow as its length times the window).
    """

    window: int = 5
    weighting: str = "uniform"
    min_count: int = 1
    max_length: int = 1000


def item_counts(sequences_df: DataFrame) -> DataFrame:
    """``id string, count long``: events per item over the sequences."""
    return (sequences_df.select(F.explode("items").alias("id"))
            .groupBy("id").agg(F.count(F.lit(1)).alias("count")))


def admitted_items(sequences_df: DataFrame, counts_df: DataFrame, min_count: int) -> DataFrame:
    """``items`` of each sequence with the items seen fewer than ``min_count`` times removed
    (order kept), keyed by the sequence's (user_id, start_ts, session_id). min_count 1
    removes nothing and costs nothing."""
    key_cols = ["user_id", "start_ts", "session_id"]
    if min_count <= 1:
        return sequences_df.select(*key_cols, "items")
    kept_df = counts_df.where(F.col("count") >= min_count).select("id")
    return (sequences_df.select(*key_cols, F.posexplode("items").alias("pos", "id"))
            .join(kept_df, on="id", how="inner")
            .groupBy(*key_cols)
            .agg(F.array_sort(F.collect_list(F.struct("pos", "id"))).alias("entries"))
            .select(*key_cols, F.col("entries.id").alias("items")))


def position_pairs(sequences_df: DataFrame, spec: CountSpec) -> DataFrame:
    """``a string, b string, weight decimal``: one row per ordered pair within the window,
    both directions (the counting is symmetric)."""
    items = F.slice("items", 1, spec.max_length)
    by_distance = []
    for d in range(1, spec.window + 1):
        weight = F.lit(1 if spec.weighting == "uniform" else 1 / d).cast(EXACT)
        length = F.greatest(F.size(items) - d, F.lit(0))
        zipped = F.arrays_zip(F.slice(items, 1, length), F.slice(items, d + 1, length))
        by_distance.append(F.transform(zipped, _pair_struct(weight)))
    one_way_df = (sequences_df.select(F.explode(F.concat(*by_distance)).alias("p"))
                  .select("p.a", "p.b", "p.weight"))
    return one_way_df.unionByName(one_way_df.select(F.col("b").alias("a"), F.col("a").alias("b"), "weight"))


def _pair_struct(weight):
    """The lambda for F.transform (one argument: a second one would be the element index)."""
    return lambda s: F.struct(s.getItem("0").alias("a"), s.getItem("1").alias("b"),
                              weight.alias("weight"))


def cooccurrence_counts(sequences_df: DataFrame, spec: CountSpec) -> DataFrame:
    """``row string, col string, count double``: #(row, col) over the sequences, one row per
    nonzero pair (the ``item_cooccurrence`` table's columns)."""
    counts_df = item_counts(sequences_df)
    admitted_df = admitted_items(sequences_df, counts_df, spec.min_count)
    return (position_pairs(admitted_df, spec)
            .groupBy(F.col("a").alias("row"), F.col("b").alias("col"))
            .agg(F.sum("weight").cast("double").alias("count"))
            .select("row", "col", "count"))


@dataclass(frozen=True)
class PmiSpec:
    """SPPMI parameters: ``smoothing`` is the context exponent alpha (1.0 = none), ``shift``
    the k of log(k) subtracted (1.0 = none)."""

    smoothing: float = 1.0
    shift: float = 1.0


def sppmi(counts_df: DataFrame, spec: PmiSpec) -> DataFrame:
    """``row string, col string, value double``: the positive entries of the shifted PPMI
    matrix of ``counts_df`` (``cooccurrence_counts``' columns).

    One aggregation (S = sum #(c)^alpha, an exact decimal sum) comes to the driver; the
    per-item totals are a frame joined back to the entries. D cancels out:
    log #_alpha(c) = log D + alpha log #(c) - log S.
    """
    exact = F.col("count").cast(EXACT)
    totals_df = counts_df.groupBy(F.col("row").alias("id")).agg(F.sum(exact).cast("double").alias("total"))
    s = totals_df.agg(F.sum(F.pow("total", spec.smoothing).cast(EXACT)).cast("double")).first()[0]
    if not s:
        return counts_df.select("row", "col", F.col("count").alias("value")).limit(0)
    log_s = math.log(s)
    row_totals = totals_df.select(F.col("id").alias("row"), F.col("total").alias("row_total"))
    col_totals = totals_df.select(F.col("id").alias("col"), F.col("total").alias("col_total"))
    value = (F.log("count") - F.log("row_total") - F.lit(spec.smoothing) * F.log("col_total")
             + F.lit(log_s - math.log(spec.shift)))
    return (counts_df.join(row_totals, on="row", how="inner")
            .join(col_totals, on="col", how="inner")
            .select("row", "col", value.alias("value"))
            .where(F.col("value") > 0))


def top_contexts(counts_df: DataFrame, rows_df: DataFrame, k: int) -> DataFrame:
    """``row string, col string, rank int``: the ``k`` most co-occurring other items of each
    ``id`` of ``rows_df`` (the co-occurrence kNN baseline), ties by id."""
    by_count = Window.partitionBy("row").orderBy(F.desc("count"), "col")
    return (counts_df.join(rows_df.select(F.col("id").alias("row")), on="row", how="inner")
            .where(F.col("row") != F.col("col"))
            .select("row", "col", F.row_number().over(by_count).alias("rank"))
            .where(F.col("rank") <= k))
