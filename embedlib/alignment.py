"""Step 3 maths on DataFrames: canonicalize (low-rank SVD of T W^T), align (Procrustes), measure.

Frames are (id string, vector array<float>, ...). Only e x e matrices reach the driver,
plus small samples for the score-preservation metric and the neighbour-churn queries (their
vectors and their k nearest ids).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from embedlib import knn, linalg
from embedlib.config import StabilizeConfig
from embedlib.errors import EmbedlibError
from embedlib.log import Phases, get_logger

log = get_logger(__name__)


class StabilizeError(EmbedlibError):
    """The inputs cannot be stabilized as configured, or a quality gate failed."""


@dataclass
class Side:
    """One matrix: today's raw vectors and, when there is one, the parent version's.

    Attributes
    ----------
    name : str
        For messages, e.g. "items".
    df : DataFrame with columns id string, vector array<float>
        Today's raw vectors.
    prev_df : DataFrame with columns id string, vector array<float>, optional
        The parent version's published vectors.
    """

    name: str
    df: DataFrame
    prev_df: DataFrame | None = None


@dataclass
class Stabilized:
    """What ``stabilize`` gives: the transformed frames, the transforms and the metrics.

    Attributes
    ----------
    items_df : DataFrame
        The items' columns, ``vector`` replaced by vector @ transform_items (float32). Lazy.
    other_df : DataFrame or None
        The same for the other side, by transform_other.
    transform_items : ndarray, shape (e, e), float64
    transform_other : ndarray, shape (e, e), float64, or None
    mode : {"canonicalize_align", "align", "none"}
    root_reason : str or None
    metrics : dict of str to float, int or str
    cosines_df : DataFrame with columns id string, raw double, stabilized double, or None
    item_ids, other_ids : DataFrame with column id string, or None
    """

    items_df: DataFrame
    other_df: DataFrame | None
    transform_items: np.ndarray  # (e, e): published = raw @ transform_items
    transform_other: np.ndarray | None
    mode: str
    root_reason: str | None  # why this version is a root (no parent used), else None
    metrics: dict = field(default_factory=dict)
    # (id, raw, stabilized) same-id cosines to the parent on shared item ids, persisted for
    # the delta; None for a root. The caller unpersists it.
    cosines_df: DataFrame | None = None
    # The ids of items_df / other_df read without the transform (a cheap plan for id joins).
    item_ids: DataFrame | None = None
    other_ids: DataFrame | None = None


def vector_dim(df: DataFrame, name: str) -> int:
    """The length of the first non-null vector of ``df`` (the Gram pass checks the others).

    Parameters
    ----------
    df : DataFrame with column vector array<float>
    name : str
        For messages.

    Returns
    -------
    int, > 0

    Raises
    ------
    StabilizeError
        ``df`` has no non-null vector, or that vector is empty.
    """
    row = df.select(F.size("vector").alias("n")).where(F.col("vector").isNotNull()).first()
    if row is None:
        raise StabilizeError(f"{name}: no vectors to stabilize (empty input)")
    if row.n <= 0:
        raise StabilizeError(f"{name}: vectors have length {row.n}")
    return int(row.n)


def checked_gram(side: Side, dim: int, cfg: StabilizeConfig) -> tuple[Side, linalg.Gram]:
    """Gram of a side; bad vectors (null, wrong length, NaN/Inf) stop the job or are dropped.

    Parameters
    ----------
    side : Side
        ``side.df`` with columns id string, vector array<float> of length dim.
    dim : int
    cfg : StabilizeConfig
        ``on_invalid_vectors`` ("error" or "drop").

    Returns
    -------
    side : Side
        ``side``, without its bad rows when they were dropped.
    gram : linalg.Gram
        Of the valid vectors.

    Raises
    ------
    StabilizeError
        Bad vectors under "error" (the message gives example ids), or no valid vector.
    """
    g = linalg.gram(side.df, "vector", dim)
    if g.n_invalid:
        examples = [r.id for r in side.df.where(linalg.invalid_vector("vector", dim)).select("id").limit(3).collect()]
        message = (f"{side.name}: {g.n_invalid} of {g.n_rows + g.n_invalid} vectors are null, not of "
                   f"length {dim}, or have NaN/Inf (e.g. ids {examples})")
        if cfg.on_invalid_vectors == "error":
            raise StabilizeError(message + "; set stabilize.on_invalid_vectors=drop to drop them")
        log.warning("%s: dropped", message)
        side = Side(side.name, side.df.where(~linalg.invalid_vector("vector", dim)), side.prev_df)
        g = linalg.gram(side.df, "vector", dim)
    if g.n_rows == 0:
        raise StabilizeError(f"{side.name}: no valid vector to stabilize")
    log.info("%s: Gram pass over %d vectors (dim %d)", side.name, g.n_rows, dim)
    return side, g


def canonical_transforms(g_t, g_w, cfg: StabilizeConfig, names=("items", "other")) -> tuple:
    """(M_T, M_W, metrics) of the low-rank SVD of T W^T from the two Gram matrices.

    Parameters
    ----------
    g_t, g_w : linalg.Gram
        T^T T and W^T W, both of dimension e.
    cfg : StabilizeConfig
        ``gram_rcond`` and ``on_rank_deficient``.
    names : (str, str)
        The two sides, for messages.

    Returns
    -------
    m_t, m_w : ndarray, shape (e, e), float64
        See ``linalg.low_rank_svd_transforms``.
    metrics : dict
        gram_condition_items, gram_condition_other (float), factor_items, factor_other
        ("cholesky" or "eigh"), rank, dim (int).

    Raises
    ------
    linalg.LinalgError
        A Gram matrix has NaN/Inf, is zero or (under on_rank_deficient=error) is rank
        deficient; or T W^T is zero.
    """
    f_t = linalg.cholesky_factor(g_t.matrix, cfg.gram_rcond, cfg.on_rank_deficient, names[0])
    f_w = linalg.cholesky_factor(g_w.matrix, cfg.gram_rcond, cfg.on_rank_deficient, names[1])
    canon = linalg.low_rank_svd_transforms(f_t.r, f_w.r)
    e = g_t.dim
    metrics = {"gram_condition_items": f_t.condition, "gram_condition_other": f_w.condition,
               "factor_items": f_t.method, "factor_other": f_w.method,
               "rank": canon.rank, "dim": e}
    log.info("canonicalized: rank %d of %d, Gram condition %.3g (%s), %.3g (%s)",
             canon.rank, e, f_t.condition, names[0], f_w.condition, names[1])
    if canon.rank < e:
        log.warning("score matrix has numerical rank %d < %d: the last %d canonical dimensions are zero",
                    canon.rank, e, e - canon.rank)
    return canon.m_t, canon.m_w, metrics


def join_previous(side: Side) -> DataFrame:
    """Today's raw vectors ``t`` next to the parent's published vectors ``b``, on shared ids.

    Parameters
    ----------
    side : Side
        With ``prev_df``; ids unique on both sides.

    Returns
    -------
    DataFrame with columns id string, t array<float>, b array<float>, count long
        Inner join on id; ``count`` is today's (null when the source has none). Lazy.
    """
    prev = side.prev_df.select("id", F.col("vector").alias("b"))
    count = F.col("count").cast("long") if "count" in side.df.columns else F.lit(None).cast("long")
    return (side.df.select("id", F.col("vector").alias("t"), count.alias("count"))
            .join(prev, on="id", how="inner"))


def stabilize(items: Side, other: Side | None, cfg: StabilizeConfig,
              prev_dim: int | None = None, phases: Phases | None = None) -> Stabilized:
    """Canonicalize and/or align today's vectors to the parent version, with quality metrics.

    Parameters
    ----------
    items : Side
        Item vectors; ``prev_df`` the parent version's published ones, None for a root.
    other : Side, optional
        The second matrix (Item2Vec context or two-tower user vectors), same length e.
    cfg : StabilizeConfig
    prev_dim : int, optional
        The parent version's vector length; a different e makes a root or raises
        (``on_dim_change``).
    phases : embedlib.log.Phases, optional
        Gets the seconds of gram, join_cross_gram, score_sample, cosines and churn.

    Returns
    -------
    Stabilized
        ``metrics`` holds at least dim, rows_items, mode, score_max_rel_err, score_pairs.

    Raises
    ------
    StabilizeError
        Vector lengths differ between the sides; mode canonicalize_align without ``other``;
        invalid vectors, low overlap or a dimension change under "error"; the parent has
        invalid vectors on shared ids; a quality gate failed.
    linalg.LinalgError
        From the factorizations (see ``canonical_transforms``).
    """
    dim = vector_dim(items.df, items.name)
    if other is not None and vector_dim(other.df, other.name) != dim:
        raise StabilizeError(f"{items.name} and {other.name} vectors have different lengths")
    mode = cfg.mode if cfg.mode != "auto" else ("canonicalize_align" if other is not None else "align")
    if mode == "canonicalize_align" and other is None:
        raise StabilizeError("stabilize.mode=canonicalize_align needs a second matrix "
                             "(Item2Vec context vectors or two-tower user vectors); use mode=align")
    phases = phases if phases is not None else Phases()
    with phases("gram"):
        items, g_t = checked_gram(items, dim, cfg)
    metrics: dict = {"dim": dim, "rows_items": g_t.n_rows, "mode": mode}
    eye = np.eye(dim)
    m_t, m_w = eye, (eye if other is not None else None)
    if other is not None:
        with phases("gram"):
            other, g_w = checked_gram(other, dim, cfg)
        metrics["rows_other"] = g_w.n_rows
        if mode == "canonicalize_align":
            m_t, m_w, canon_metrics = canonical_transforms(g_t, g_w, cfg, (items.name, other.name))
            metrics.update(canon_metrics)
    root_reason = _root_reason(items, dim, prev_dim, mode, cfg)
    o, joined = eye, None
    if root_reason is None:
        with phases("join_cross_gram"):
            o, joined, align_metrics = _align(items, other, m_t, m_w, g_t.n_rows, dim, cfg)
        metrics.update(align_metrics)
        if metrics.get("root_reason"):
            root_reason, o = metrics.pop("root_reason"), eye
    f_t = m_t @ o
    f_w = m_w @ o if m_w is not None else None
    with phases("score_sample"):
        metrics.update(score_preservation(items.df, other.df if other else None, f_t, f_w, cfg))
    log.info("score preservation: max relative error %.3g over %d sampled pairs",
             metrics["score_max_rel_err"], metrics["score_pairs"])
    if joined is not None and root_reason is None:
        cosines_df, same_id = same_id_metrics(joined, f_t, dim, cfg, phases)
        metrics.update(same_id)
    else:
        cosines_df = None
    if joined is not None:
        joined.unpersist()
    try:
        _check_gates(metrics, cfg)
    except StabilizeError:
        if cosines_df is not None:
            cosines_df.unpersist()
        raise
    return Stabilized(linalg.apply_transform(items.df, "vector", f_t),
                      linalg.apply_transform(other.df, "vector", f_w) if other else None,
                      f_t, f_w, mode, root_reason, metrics, cosines_df,
                      items.df.select("id"), other.df.select("id") if other else None)


def _root_reason(items: Side, dim: int, prev_dim: int | None, mode: str, cfg) -> str | None:
    if mode == "none":
        return "mode none"
    if items.prev_df is None:
        return "no previous version"
    if prev_dim is not None and prev_dim != dim:
        message = f"dimension changed from {prev_dim} to {dim}: an orthogonal alignment is impossible"
        if cfg.on_dim_change == "error":
            raise StabilizeError(message + "; set stabilize.on_dim_change=new_root to start a new chain")
        log.warning("%s: publishing a new root", message)
        return f"dimension change {prev_dim}->{dim}"
    return None


def _align(items: Side, other: Side | None, m_t, m_w, n_items: int, dim: int, cfg) -> tuple:
    joined = join_previous(items).persist(StorageLevel.MEMORY_AND_DISK)
    cg = linalg.cross_gram(joined, "t", "b", dim, m_t)
    needed = max(dim, int(np.ceil(cfg.min_overlap_share * n_items)))
    metrics = {"rows_joined": cg.n_rows, "overlap_share": cg.n_rows / n_items}
    if cg.n_invalid:
        raise StabilizeError(f"the parent version has {cg.n_invalid} invalid vectors on shared ids")
    if cg.n_rows < needed:
        message = (f"only {cg.n_rows} of {n_items} item ids are in the parent version (need {needed}: "
                   f"at least the dimension {dim} and stabilize.min_overlap_share={cfg.min_overlap_share})")
        if cfg.on_low_overlap == "error":
            joined.unpersist()
            raise StabilizeError(message + "; set stabilize.on_low_overlap=new_root to start a new chain")
        log.warning("%s: publishing a new root", message)
        return np.eye(dim), joined, {**metrics, "root_reason": "low overlap"}
    cross = cg.cross.copy()
    if cfg.align_on == "items_and_other" and other is not None and other.prev_df is not None:
        og = linalg.cross_gram(join_previous(other), "t", "b", dim, m_w)
        cross += cfg.other_weight * og.cross
        metrics["rows_joined_other"] = og.n_rows
    o = linalg.procrustes_rotation(cross)
    metrics["alignment_residual"] = linalg.alignment_residual(cg.sq_norm_a, cg.cross, cg.sq_norm_b, o)
    log.info("aligned on %d shared ids: residual %.4g", cg.n_rows, metrics["alignment_residual"])
    return o, joined, metrics


def score_preservation(items_df, other_df, f_t, f_w, cfg: StabilizeConfig) -> dict:
    """Max |S_new - S_raw| / max |S_raw| over sampled pairs, with float32 storage of S_new.

    S = T W^T (item x other) when there is a second matrix, else T T^T (item x item).

    Parameters
    ----------
    items_df : DataFrame with column vector array<float> of length e
        Raw T; valid vectors.
    other_df : DataFrame with column vector array<float> of length e, or None
        Raw W.
    f_t : ndarray, shape (e, e)
        Published T = raw T @ f_t.
    f_w : ndarray, shape (e, e), or None
        Published W = raw W @ f_w; unused when ``other_df`` is None.
    cfg : StabilizeConfig
        ``score_sample``: the first rows of each side used.

    Returns
    -------
    dict
        score_max_rel_err (float; 0 when S_raw is zero), score_pairs (int).
    """
    t = _sample_matrix(items_df, cfg.score_sample)
    w, f_other = (_sample_matrix(other_df, cfg.score_sample), f_w) if other_df is not None else (t, f_t)
    before = t @ w.T
    after = (t @ f_t).astype(np.float32).astype(np.float64) @ (w @ f_other).astype(np.float32).astype(np.float64).T
    scale = np.abs(before).max()
    err = float(np.abs(after - before).max() / scale) if scale > 0 else 0.0
    return {"score_max_rel_err": err, "score_pairs": int(before.size)}


def _sample_matrix(df: DataFrame, n: int) -> np.ndarray:
    # The first n rows: any rows check the arithmetic, and a limit reads one file split
    # instead of every vector.
    rows = df.select("vector").limit(n).collect()
    return np.array([r.vector for r in rows], dtype=np.float64)


def same_id_metrics(joined: DataFrame, f_t: np.ndarray, dim: int, cfg: StabilizeConfig,
                    phases: Phases | None = None) -> tuple:
    """Same-id cosines to the parent, raw and stabilized, and the neighbour churn on shared ids.

    Parameters
    ----------
    joined : DataFrame with columns id string, t array<float>, b array<float> of length dim
        ``join_previous``'s frame; valid vectors.
    f_t : ndarray, shape (dim, dim)
        Stabilized = t @ f_t.
    dim : int
    cfg : StabilizeConfig
        ``overlap_k``, ``overlap_queries``.

    Returns
    -------
    cosines_df : DataFrame with columns id string, raw double, stabilized double
        Persisted; the caller unpersists it.
    metrics : dict
        cosine_raw_mean, cosine_raw_median, cosine_raw_p5 and the same for stabilized
        (float); when more than ``overlap_k`` ids are shared, ``churn_metrics``' keys
        (neighbour_overlap_at_<k>, neighbour_churn_share, overlap_queries, most_changed).
    """
    phases = phases if phases is not None else Phases()
    cos_df = linalg.row_cosines(joined, "t", "b", dim, {"raw": None, "stabilized": f_t}, keep=["id"])
    cos_df = cos_df.persist(StorageLevel.MEMORY_AND_DISK)
    aggs = [F.count(F.lit(1)).alias("n")]
    for c in ("raw", "stabilized"):
        aggs += [F.mean(c).alias(f"{c}_mean"), F.percentile_approx(c, [0.5, 0.05], 10000).alias(f"{c}_q")]
    with phases("cosines"):
        row = cos_df.agg(*aggs).first()
    metrics = {}
    for c in ("raw", "stabilized"):
        metrics[f"cosine_{c}_mean"] = row[f"{c}_mean"]
        metrics[f"cosine_{c}_median"], metrics[f"cosine_{c}_p5"] = row[f"{c}_q"]
    log.info("same-id cosine to parent: raw %.3f, stabilized %.3f (mean)",
             metrics["cosine_raw_mean"], metrics["cosine_stabilized_mean"])
    if row["n"] > cfg.overlap_k:
        with phases("churn"):
            query_ids, before, after = neighbour_churn(joined, f_t, dim, cfg.overlap_k, cfg.overlap_queries)
        metrics.update(churn_metrics(query_ids, before, after, cfg.overlap_k))
        log.info("neighbour overlap@%d to parent over %d shared ids: %.3f for %d queries, %.1f%% of them "
                 "kept less than half their neighbours", cfg.overlap_k, row["n"],
                 metrics[f"neighbour_overlap_at_{cfg.overlap_k}"], len(query_ids),
                 100 * metrics["neighbour_churn_share"])
    return cos_df, metrics


# The queried items whose neighbourhoods changed most, kept in the metrics (and the report).
MOST_CHANGED = 20
_HASH_BITS = 53


def query_order(df: DataFrame) -> list:
    """Sort keys whose first n rows are a count-weighted sample of ids, without replacement.

    Efraimidis-Spirakis: each id draws u in (0, 1) from its xxhash64 and gets the key
    log(u) / count; the largest keys win, so an item seen w times is about w times as
    likely to be queried, as it is w times as likely to be looked at. The draw depends on
    the id only, so the same items are queried from day to day while their counts hold.
    No ``count`` column (or a null count) weighs every id as 1: a uniform sample.
    """
    u = ((F.xxhash64("id").bitwiseAND(F.lit((1 << _HASH_BITS) - 1))).cast("double") + 0.5) / float(1 << _HASH_BITS)
    weight = (F.greatest(F.coalesce(F.col("count").cast("double"), F.lit(1.0)), F.lit(1.0))
              if "count" in df.columns else F.lit(1.0))
    return [(F.log(u) / weight).desc(), F.col("id")]


def neighbour_churn(joined: DataFrame, f_t: np.ndarray, dim: int, k: int, n_queries: int) -> tuple:
    """Each query's k nearest shared ids by cosine, today (stabilized) and in the parent.

    The queries are ``n_queries`` shared ids drawn in proportion to today's counts by
    ``query_order`` (seeded by the id's hash, so the same items from one day to the next
    while they stay).
    Their vectors (a few hundred rows) are collected and broadcast; one pass over the
    Arrow batches of ``joined`` scores them against every row on both sides
    (``knn.block_candidates``, the query's own row excluded) and keeps each partition's k
    best; the partitions' candidates are merged on the driver (a tree reduction on the
    executors past ``linalg.FLAT_REDUCE_MAX_PARTITIONS``) by ``knn.merge_candidates``:
    score descending, then id ascending. Nothing else of ``joined`` reaches the driver.

    Parameters
    ----------
    joined : DataFrame with columns id string, t array<float>, b array<float> of length dim
        ``join_previous``'s frame: ids unique, vectors valid.
    f_t : ndarray, shape (dim, dim)
        Stabilized = t @ f_t.
    dim, k, n_queries : int

    Returns
    -------
    query_ids : list of str
        In ``query_order``.
    before : list of list of str
        Per query, its min(k, shared - 1) nearest ids among the parent's vectors ``b``.
    after : list of list of str
        The same among today's stabilized vectors ``t @ f_t``.
    """
    rows = joined.orderBy(*query_order(joined)).limit(n_queries).select("id", "t", "b").collect()
    query_ids = [r.id for r in rows]
    if not rows:
        return [], [], []
    f = np.asarray(f_t, dtype=np.float64)
    queries = np.stack([knn.unit_rows(np, np.array([r.t for r in rows], dtype=np.float32).astype(np.float64) @ f),
                        knn.unit_rows(np, np.array([r.b for r in rows], dtype=np.float32))])
    spark = joined.sparkSession
    shared = spark.sparkContext.broadcast((query_ids, queries))

    def partial(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        qids, q = shared.value
        best = (np.full((2, len(qids), k), -np.inf, dtype=np.float32), np.full((2, len(qids), k), None, dtype=object))
        for batch in batches:
            ids = batch.column("id")
            sides = [linalg.batch_matrix(batch.column(c), dim) for c in ("t", "b")]
            if any(x is None for x in sides):
                raise ValueError(f"a vector of the joined frame is null or not of length {dim}")
            # Each query's own row in this batch, if it is here: never its own neighbour.
            where = pc.index_in(pa.array(qids, type=ids.type), value_set=ids)
            exclude = where.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
            id_values = ids.to_numpy(zero_copy_only=False)
            found = [knn.block_candidates(q[s], x, id_values, k, exclude)
                     for s, x in enumerate((sides[0].astype(np.float64) @ f, sides[1]))]
            best = knn.merge_candidates(np.concatenate([best[0], np.stack([c[0] for c in found])], axis=-1),
                                        np.concatenate([best[1], np.stack([c[1] for c in found])], axis=-1), k)
        yield pa.record_batch([pa.array([best[1].ravel().tolist()], type=pa.list_(pa.string())),
                               pa.array([best[0].tobytes()])], names=["ids", "scores"])

    shape = (2, len(query_ids), k)

    def parse(r):
        return np.frombuffer(r.scores, dtype=np.float32).reshape(shape), np.array(r.ids, dtype=object).reshape(shape)

    def merge(a, b):
        return knn.merge_candidates(np.concatenate([a[0], b[0]], axis=-1), np.concatenate([a[1], b[1]], axis=-1), k)

    partials = joined.select("id", "t", "b").mapInArrow(partial, "ids array<string>, scores binary")
    try:
        if partials.rdd.getNumPartitions() <= linalg.FLAT_REDUCE_MAX_PARTITIONS:
            parts = [parse(r) for r in partials.collect()]
            _, ids = knn.merge_candidates(np.concatenate([p[0] for p in parts], axis=-1),
                                          np.concatenate([p[1] for p in parts], axis=-1), k)
        else:
            _, ids = partials.rdd.map(parse).treeReduce(merge, depth=2)
    finally:
        shared.destroy()
    after, before = ([[x for x in row if x is not None] for row in side] for side in ids)
    return query_ids, before, after


def churn_metrics(query_ids, before, after, k: int, most_changed: int = MOST_CHANGED) -> dict:
    """Neighbour overlap@k and churn of queried items from their neighbours in two versions.

    Parameters
    ----------
    query_ids : sequence of str, length q
    before, after : sequence of q sequences of str
        Each query's nearest ids in the parent and today, nearest first.
    k : int
        For the key name.
    most_changed : int
        How many of the most changed queries are listed.

    Returns
    -------
    dict
        neighbour_overlap_at_<k> (mean share of a query's neighbours kept), neighbour_churn_share
        (share of queries that kept less than half), overlap_queries (q), most_changed (the
        ``most_changed`` queries with the lowest overlap, ties by id: {id, overlap, before,
        after}). Empty when q is 0.
    """
    if not len(query_ids):
        return {}
    share = knn.shared_share(before, after)
    order = sorted(range(len(query_ids)), key=lambda i: (share[i], query_ids[i]))[:most_changed]
    return {f"neighbour_overlap_at_{k}": float(share.mean()),
            "neighbour_churn_share": float((share < 0.5).mean()),
            "overlap_queries": len(query_ids),
            "most_changed": [{"id": query_ids[i], "overlap": float(share[i]),
                              "before": list(before[i]), "after": list(after[i])} for i in order]}


def neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int, n_queries: int) -> float:
    """Mean share of the k cosine nearest neighbours (self excluded) that a and b agree on.

    For matrices in memory (benchmarks); the pipeline runs ``neighbour_churn`` on Spark.

    Parameters
    ----------
    a, b : ndarray, shape (n, e), float
        The same ids, row for row, in two versions.
    k : int
        At most n - 1 neighbours are used.
    n_queries : int
        The first min(n_queries, n) rows are the queries.

    Returns
    -------
    float, in [0, 1]
    """
    q = np.arange(min(n_queries, a.shape[0]))
    return float(knn.shared_share(knn.nearest_neighbors(a, q, k), knn.nearest_neighbors(b, q, k)).mean())


def _check_gates(metrics: dict, cfg: StabilizeConfig) -> None:
    err = metrics.get("score_max_rel_err", 0.0)
    if not np.isfinite(err) or err > cfg.max_score_error:
        raise StabilizeError(f"quality gate: score preservation error {err:.3g} is above "
                             f"stabilize.max_score_error={cfg.max_score_error:g}; nothing published")
    floor, cos = cfg.min_stabilized_cosine, metrics.get("cosine_stabilized_mean")
    if floor is not None and cos is not None and cos < floor:
        raise StabilizeError(f"quality gate: mean stabilized same-id cosine {cos:.3f} is below "
                             f"stabilize.min_stabilized_cosine={floor}; nothing published")
