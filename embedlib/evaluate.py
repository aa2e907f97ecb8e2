"""Quality of item vectors: next-item prediction on a temporal hold-out, planted-cluster purity.

Next-item prediction: sequences starting at or after a cut time are held out; each
consecutive (previous item, next item) pair in them is a test pair, kept when both items
occur in the training sequences. A model answers with the k nearest neighbours of the
previous item by cosine (the item itself excluded); HR@k is the share of pairs whose next
item is among them, NDCG@k weighs a hit at rank r by 1 / log2(r + 1). The popularity
baseline answers every query with the k most frequent training items (the query excluded).
"""
from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from embedlib import spark_passes, trainers
from embedlib.config import Config, EvaluateConfig
from embedlib.errors import EmbedlibError
from embedlib.knn import nearest_neighbors
from embedlib.log import get_logger
from embedlib.serving.vectors import arrays_from_arrow

log = get_logger(__name__)


class EvaluationError(EmbedlibError):
    """The hold-out cannot be formed (no training or no test sequences, no test pair)."""


@dataclass
class HoldOut:
    """Training sequences before the cut and the held-out transitions after it.

    Attributes
    ----------
    train_df : DataFrame
        The sequences (tables.sequences columns) that start before the cut.
    queries, targets : ndarray, shape (p,), object (str)
        Previous and next item of each held-out pair.
    popular : ndarray, shape (k + 1,) or fewer, object (str)
        Training items by count, most frequent first (ties by id).
    cut_time : str
        The cut, ISO format with its zone.
    """

    train_df: DataFrame
    queries: np.ndarray
    targets: np.ndarray
    popular: np.ndarray
    cut_time: str


def cut_timestamp(sequences_df: DataFrame, eval_cfg: EvaluateConfig) -> _dt.datetime:
    """The configured cut, or the start time below which 1 - test_share of sequences lie.

    Parameters
    ----------
    sequences_df : DataFrame with column start_ts timestamp
    eval_cfg : EvaluateConfig
        ``cut_time`` (ISO; UTC when it has no zone) or ``test_share``.

    Returns
    -------
    datetime
        Timezone-aware.

    Raises
    ------
    EvaluationError
        No cut_time and no sequences.
    ValueError
        ``cut_time`` is not an ISO timestamp.
    """
    if eval_cfg.cut_time:
        cut = _dt.datetime.fromisoformat(eval_cfg.cut_time)
        return cut if cut.tzinfo else cut.replace(tzinfo=_dt.timezone.utc)
    start_s = sequences_df.select(F.unix_seconds("start_ts").cast("double").alias("s"))
    quantile = start_s.approxQuantile("s", [1.0 - eval_cfg.test_share], 0.0)
    if not quantile:
        raise EvaluationError("no sequences to split into training and hold-out")
    return _dt.datetime.fromtimestamp(quantile[0], _dt.timezone.utc)


def held_out_pairs(test_df: DataFrame, vocab_df: DataFrame, max_per_user: int) -> DataFrame:
    """Consecutive (query, target) pairs of ``test_df`` with both items in ``vocab_df.id``.

    Pairs of an item with itself are left out.

    Parameters
    ----------
    test_df : DataFrame with columns user_id string, session_id string, start_ts timestamp, items array<string>
    vocab_df : DataFrame with column id string
    max_per_user : int
        Pairs kept per user, earliest first (start_ts, session_id, position); 0 keeps all.

    Returns
    -------
    DataFrame with columns query string, target string
        Lazy.
    """
    steps = F.sequence(F.lit(2), F.size("items"))
    pair = lambda i: F.struct(F.element_at("items", i - 1).alias("query"),  # noqa: E731
                              F.element_at("items", i).alias("target"), i.alias("pos"))
    pairs_df = (
        test_df.where(F.size("items") >= 2)
        .select("user_id", "start_ts", "session_id", F.explode(F.transform(steps, pair)).alias("p"))
        .select("user_id", "start_ts", "session_id", "p.query", "p.target", "p.pos")
        .where(F.col("query") != F.col("target"))
    )
    for col_name in ("query", "target"):
        pairs_df = pairs_df.join(vocab_df.select(F.col("id").alias(col_name)), on=col_name,
                                 how="left_semi")
    if max_per_user:
        order = Window.partitionBy("user_id").orderBy("start_ts", "session_id", "pos")
        pairs_df = (pairs_df.withColumn("n", F.row_number().over(order))
                    .where(F.col("n") <= max_per_user))
    return pairs_df.select("query", "target")


def temporal_holdout(sequences_df: DataFrame, eval_cfg: EvaluateConfig) -> HoldOut:
    """Split ``sequences_df`` (tables.sequences columns) at the cut time.

    Parameters
    ----------
    sequences_df : DataFrame with columns user_id string, session_id string, start_ts timestamp, items array<string>
    eval_cfg : EvaluateConfig
        ``cut_time``, ``test_share``, ``k``, ``max_pairs_per_user``.

    Returns
    -------
    HoldOut
        Test pairs start at or after the cut, with both items seen in training.

    Raises
    ------
    EvaluationError
        No sequence, no training sequence before the cut, or no test pair after it.
    """
    cut = cut_timestamp(sequences_df, eval_cfg)
    before = F.col("start_ts") < F.lit(cut)
    train_df = sequences_df.where(before)
    counts_df = (train_df.select(F.explode("items").alias("id"))
                 .groupBy("id").agg(F.count(F.lit(1)).alias("count")))
    popular = [r.id for r in counts_df.orderBy(F.desc("count"), "id").limit(eval_cfg.k + 1).collect()]
    if not popular:
        raise EvaluationError(f"no training sequence starts before the cut {cut.isoformat()}")
    pairs = held_out_pairs(sequences_df.where(~before), counts_df, eval_cfg.max_pairs_per_user)
    table = pairs.toArrow()
    if table.num_rows == 0:
        raise EvaluationError(f"no held-out transition after the cut {cut.isoformat()} "
                              "with both items seen in training")
    log.info("hold-out: cut %s, %d test pairs", cut.isoformat(), table.num_rows)
    return HoldOut(train_df, np.array(table["query"].to_pylist(), dtype=object),
                   np.array(table["target"].to_pylist(), dtype=object),
                   np.array(popular, dtype=object), cut.isoformat())


def vectors_to_numpy(item_df: DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of an embedding DataFrame: shapes (n,) of str and (n, e) float32.

    Parameters
    ----------
    item_df : DataFrame with columns id string, vector array<float> of one length e

    Returns
    -------
    ids : ndarray, shape (n,), object (str)
    vectors : ndarray, shape (n, e), float32

    Raises
    ------
    VectorsError
        No rows, a null id, or a null, ragged or null-element vector.
    """
    return arrays_from_arrow(item_df.select("id", "vector").toArrow())


def _ranked_metrics(ranks: np.ndarray) -> tuple[float, float]:
    """HR and NDCG from 1-based hit ranks (0 = miss), shape (p,)."""
    hit = ranks > 0
    gains = np.where(hit, 1.0 / np.log2(np.where(hit, ranks, 1) + 1.0), 0.0)
    return float(hit.mean()), float(gains.mean())


def next_item_metrics(ids: np.ndarray, vectors: np.ndarray, holdout: HoldOut, k: int = 10) -> dict:
    """HR@k and NDCG@k of cosine neighbours and of the popularity baseline.

    Parameters
    ----------
    ids : ndarray of str, shape (n,)
    vectors : ndarray, shape (n, e), float
    holdout : HoldOut
        A query without a vector is a miss (``coverage`` is the share that had one).
    k : int
        At most n - 1 neighbours are used.

    Returns
    -------
    dict
        hr, ndcg, popularity_hr, popularity_ndcg, coverage (float), test_pairs, k (int),
        cut_time (str).
    """
    index = {item_id: i for i, item_id in enumerate(ids)}
    q_idx = np.array([index.get(q, -1) for q in holdout.queries], dtype=np.int64)
    t_idx = np.array([index.get(t, -2) for t in holdout.targets], dtype=np.int64)
    known = q_idx >= 0
    uniq, inverse = np.unique(q_idx[known], return_inverse=True)
    neighbors = nearest_neighbors(vectors, uniq, k)[inverse]
    ranks = np.zeros(len(q_idx), dtype=np.int64)
    hit_rows, hit_cols = np.nonzero(neighbors == t_idx[known][:, None])
    ranks[np.flatnonzero(known)[hit_rows]] = hit_cols + 1
    hr, ndcg = _ranked_metrics(ranks)
    pop_ranks = np.array([_popular_rank(holdout.popular, q, t, k)
                          for q, t in zip(holdout.queries, holdout.targets)], dtype=np.int64)
    pop_hr, pop_ndcg = _ranked_metrics(pop_ranks)
    return {"hr": hr, "ndcg": ndcg, "popularity_hr": pop_hr, "popularity_ndcg": pop_ndcg,
            "test_pairs": int(len(q_idx)), "coverage": float(known.mean()), "k": k,
            "cut_time": holdout.cut_time}


def _popular_rank(popular: np.ndarray, query: str, target: str, k: int) -> int:
    answer = [p for p in popular if p != query][:k]
    return answer.index(target) + 1 if target in answer else 0


def read_clusters(path: str | Path) -> dict[str, int]:
    """Planted clusters (sample_data.write_sample's items.csv): {item_id: cluster}.

    Parameters
    ----------
    path : str or Path
        CSV with a header and columns item_id (string), cluster (int64).

    Returns
    -------
    dict of str to int
    """
    options = pacsv.ConvertOptions(column_types={"item_id": pa.string(), "cluster": pa.int64()})
    table = pacsv.read_csv(path, convert_options=options)
    return dict(zip(table["item_id"].to_pylist(), table["cluster"].to_pylist()))


def cluster_purity(ids: np.ndarray, vectors: np.ndarray, clusters: dict[str, int],
                   k: int = 10) -> dict:
    """Share of each item's k nearest neighbours (cosine) that share its planted cluster.

    Parameters
    ----------
    ids : ndarray of str, shape (n,)
    vectors : ndarray, shape (n, e), float
    clusters : dict of str to int
        {item_id: cluster}, clusters >= 0; items without a cluster are left out as queries
        and count as a different cluster as neighbours.
    k : int
        At most n - 1 neighbours are used.

    Returns
    -------
    dict
        purity (float, mean share), items (int, queries), k (int, neighbours used),
        random (float, purity of random neighbours).

    Raises
    ------
    EvaluationError
        No item with a cluster has a vector, or fewer than 2 vectors.
    """
    labels = np.array([clusters.get(i, -1) for i in ids], dtype=np.int64)
    rows = np.flatnonzero(labels >= 0)
    if len(rows) == 0 or len(ids) < 2:
        raise EvaluationError("no item with a planted cluster has a vector")
    neighbors = nearest_neighbors(vectors, rows, k)
    same = labels[neighbors] == labels[rows][:, None]
    _, sizes = np.unique(labels[rows], return_counts=True)
    return {"purity": float(same.mean()), "items": int(len(rows)), "k": int(neighbors.shape[1]),
            "random": float(((sizes / len(ids)) ** 2).sum() / (sizes / len(ids)).sum())}


def cooccurrence_metrics(spark: SparkSession, holdout: HoldOut, window: int, k: int = 10) -> dict:
    """HR@k and NDCG@k of the baseline a user tries first: a query's k most co-occurring
    items (raw counts within ``window`` positions in the training sequences, no embedding).

    Returns
    -------
    dict
        cooccurrence_hr, cooccurrence_ndcg (float), cooccurrence_window (int).
    """
    from embedlib.cooccurrence import CountSpec, cooccurrence_counts, top_contexts

    queries_df = spark.createDataFrame([(q,) for q in sorted(set(holdout.queries))], "id string")
    counts_df = cooccurrence_counts(holdout.train_df, CountSpec(window=window))
    top = {}
    for r in top_contexts(counts_df, queries_df, k).collect():
        top.setdefault(r.row, {})[r.col] = r.rank
    ranks = np.array([top.get(q, {}).get(t, 0) for q, t in zip(holdout.queries, holdout.targets)],
                     dtype=np.int64)
    hr, ndcg = _ranked_metrics(ranks)
    return {"cooccurrence_hr": hr, "cooccurrence_ndcg": ndcg, "cooccurrence_window": window}


def evaluate_holdout(spark: SparkSession, holdout: HoldOut, cfg: Config,
                     name: str = "eval") -> dict:
    """Train cfg.train on the hold-out's training sequences and score its test pairs.

    ``wall_seconds`` covers the whole trainer (corpus export, vocabulary, training and
    the vectors back on the driver), the figure to compare trainers by.

    Parameters
    ----------
    spark : SparkSession
    holdout : HoldOut
    cfg : Config
        ``train`` and ``evaluate`` (k, clusters_path).
    name : str
        Corpus name of the trainer's export.

    Returns
    -------
    dict
        trainer, wall_seconds, train_seconds, words_per_second, vocab_size, corpus_tokens,
        the keys of ``next_item_metrics``, and cluster_<key> for each key of
        ``cluster_purity`` when evaluate.clusters_path is set.

    Raises
    ------
    item2vec.TrainInputError
        The training sequences cannot give a model.
    EvaluationError
        From ``cluster_purity``.
    """
    started = time.perf_counter()
    result = trainers.train(spark, holdout.train_df, cfg.train, corpus_name=name)
    ids, vectors = vectors_to_numpy(result.item_df)
    spark_passes.release(result.cached)
    report = {"trainer": cfg.train.trainer, "wall_seconds": time.perf_counter() - started,
              **{key: result.meta[key] for key in ("train_seconds", "words_per_second",
                                                   "vocab_size", "corpus_tokens")},
              **next_item_metrics(ids, vectors, holdout, cfg.evaluate.k)}
    if cfg.evaluate.cooccurrence_window:
        report.update(cooccurrence_metrics(spark, holdout, cfg.evaluate.cooccurrence_window,
                                           cfg.evaluate.k))
    if cfg.evaluate.clusters_path:
        purity = cluster_purity(ids, vectors, read_clusters(cfg.evaluate.clusters_path),
                                cfg.evaluate.k)
        report.update({f"cluster_{key}": value for key, value in purity.items()})
    return report


def evaluate_trainer(spark: SparkSession, sequences_df: DataFrame, cfg: Config,
                     name: str = "eval") -> dict:
    """Split ``sequences_df`` at the cut, train cfg.train before it, score the pairs after.

    Parameters
    ----------
    spark : SparkSession
    sequences_df : DataFrame with columns user_id string, session_id string, start_ts timestamp, items array<string>
    cfg : Config
    name : str
        Corpus name of the trainer's export.

    Returns
    -------
    dict
        As ``evaluate_holdout``.

    Raises
    ------
    EvaluationError, item2vec.TrainInputError
        As ``temporal_holdout`` and ``evaluate_holdout``.
    """
    return evaluate_holdout(spark, temporal_holdout(sequences_df, cfg.evaluate), cfg, name)
