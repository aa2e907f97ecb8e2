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
from pyspark.broadcast import Broadcast
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType

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
    source : linalg.FileSource, optional
        ``df``'s rows as Parquet files the tasks read with pyarrow (columns id, vector and,
        where there is one, count): the Gram pass and the join read them.
    prev_source : linalg.FileSource, optional
        The same for ``prev_df`` (id, vector).
    """

    name: str
    df: DataFrame
    prev_df: DataFrame | None = None
    source: linalg.FileSource | None = None
    prev_source: linalg.FileSource | None = None


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
    # (id, raw, stabilized) same-id cosines to the parent of the shared item ids that moved
    # (1 - stabilized > moved_threshold), for the delta; None for a root.
    cosines_df: DataFrame | None = None
    # The ids of items_df / other_df read without the transform (a cheap plan for id joins).
    item_ids: DataFrame | None = None
    other_ids: DataFrame | None = None
    # Frames persisted for the publication (under cosines_df): ``release`` unpersists them.
    cached: list = field(default_factory=list)
    # Today's valid raw vectors (items_df / other_df before the transform): the publication
    # writes them with the transform applied as it writes (linalg.transform_batches).
    raw_items: DataFrame | None = None
    raw_other: DataFrame | None = None
    # Their files where the tasks can read them (Side.source), for the same write.
    items_source: linalg.FileSource | None = None
    other_source: linalg.FileSource | None = None

    def release(self) -> None:
        """Unpersist what the stabilization kept cached for the publication."""
        release(self.cached)
        self.cached = []


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
    g = linalg.gram(side.df, "vector", dim, side.source)
    if g.n_invalid:
        examples = [r.id for r in side.df.where(linalg.invalid_vector("vector", dim)).select("id").limit(3).collect()]
        message = (f"{side.name}: {g.n_invalid} of {g.n_rows + g.n_invalid} vectors are null, not of "
                   f"length {dim}, or have NaN/Inf (e.g. ids {examples})")
        if cfg.on_invalid_vectors == "error":
            raise StabilizeError(message + "; set stabilize.on_invalid_vectors=drop to drop them")
        log.warning("%s: dropped", message)
        side = Side(side.name, side.df.where(~linalg.invalid_vector("vector", dim)), side.prev_df,
                    prev_source=side.prev_source)
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


def join_previous(side: Side, dim: int | None = None) -> DataFrame:
    """Today's raw vectors ``t`` next to the parent's published vectors ``b``, on shared ids.

    Where both sides have a ``FileSource`` (and ``dim`` is given) the tasks read the files
    with pyarrow and the vectors travel as binary (``FileSource.binary_vectors``): the
    shuffle, the cache and the passes then move each vector as one block.

    Parameters
    ----------
    side : Side
        With ``prev_df``; ids unique on both sides.
    dim : int, optional

    Returns
    -------
    DataFrame with columns id string, t, b, count long
        t and b array<float> (or binary, see above; ``linalg.batch_matrix`` reads both).
        Inner join on id; ``count`` is today's (null when the source has none). Lazy.
    """
    if dim and side.source is not None and side.prev_source is not None and "id" in side.source.columns:
        spark = side.df.sparkSession
        today = side.source.binary_vectors(spark, dim, "t")
        prev = side.prev_source.binary_vectors(spark, dim, "b").select("id", "b")
    else:
        today = side.df.select("id", F.col("vector").alias("t"), *(["count"] if "count" in side.df.columns else []))
        prev = side.prev_df.select("id", F.col("vector").alias("b"))
    count = F.col("count").cast("long") if "count" in today.columns else F.lit(None).cast("long")
    # A shuffle join, always: Spark cannot size a frame read by tasks (it would guess a few
    # rows and broadcast the parent's vectors through the driver).
    return today.select("id", "t", count.alias("count")).join(prev.hint("shuffle_hash"), on="id", how="inner")


def stabilize(items: Side, other: Side | None, cfg: StabilizeConfig,
              prev_dim: int | None = None, phases: Phases | None = None,
              moved_threshold: float = 0.0) -> Stabilized:
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
        Gets the seconds of gram, join_cross_gram, score_sample and same_id (cosines and churn).
    moved_threshold : float
        ``cosines_df`` keeps the shared ids with 1 - stabilized cosine above it (the delta's
        "moved" rows, publish.delta_cosine_threshold).

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
    o, joined, queries = eye, None, None
    if root_reason is None:
        with phases("join_cross_gram"):
            o, joined, queries, align_metrics = _align(items, other, m_t, m_w, g_t.n_rows, dim, cfg)
        metrics.update(align_metrics)
        if metrics.get("root_reason"):
            root_reason, o = metrics.pop("root_reason"), eye
    f_t = m_t @ o
    f_w = m_w @ o if m_w is not None else None
    with phases("score_sample"):
        metrics.update(score_preservation(items.df, other.df if other else None, f_t, f_w, cfg))
    log.info("score preservation: max relative error %.3g over %d sampled pairs",
             metrics["score_max_rel_err"], metrics["score_pairs"])
    cosines_df, cached = None, []
    if joined is not None and root_reason is None:
        with phases("same_id"):
            cosines_df, cached, same_id = same_id_metrics(joined, f_t, dim, cfg, queries, moved_threshold)
        metrics.update(same_id)
    if joined is not None:
        joined.unpersist()
    result = Stabilized(linalg.apply_transform(items.df, "vector", f_t),
                        linalg.apply_transform(other.df, "vector", f_w) if other else None,
                        f_t, f_w, mode, root_reason, metrics, cosines_df,
                        items.df.select("id"), other.df.select("id") if other else None, cached,
                        items.df, other.df if other else None, items.source, other.source if other else None)
    try:
        _check_gates(metrics, cfg)
    except StabilizeError:
        result.release()
        raise
    return result


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
    """(rotation, the persisted join, the churn's query rows, metrics); one pass over the join
    sums the cross-Gram and picks the queries (``query_order``'s first rows)."""
    joined = join_previous(items, dim)
    joined = joined.withColumn(QUERY_KEY, query_key(joined))
    joined = joined.persist(StorageLevel.DISK_ONLY)
    top = linalg.TopRows(cfg.overlap_queries, QUERY_KEY) if cfg.overlap_queries > 0 else None
    cg = linalg.cross_gram(joined, "t", "b", dim, m_t, top)
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
        return np.eye(dim), joined, None, {**metrics, "root_reason": "low overlap"}
    cross = cg.cross.copy()
    if cfg.align_on == "items_and_other" and other is not None and other.prev_df is not None:
        og = linalg.cross_gram(join_previous(other, dim), "t", "b", dim, m_w)
        cross += cfg.other_weight * og.cross
        metrics["rows_joined_other"] = og.n_rows
    o = linalg.procrustes_rotation(cross)
    metrics["alignment_residual"] = linalg.alignment_residual(cg.sq_norm_a, cg.cross, cg.sq_norm_b, o)
    log.info("aligned on %d shared ids: residual %.4g", cg.n_rows, metrics["alignment_residual"])
    return o, joined, cg.top, metrics


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
                    queries: pa.Table | None = None, moved_threshold: float = 0.0) -> tuple:
    """Same-id cosines to the parent, raw and stabilized, and the neighbour churn on shared ids.

    One pass over ``joined`` (``same_id_pass``).

    Parameters
    ----------
    joined : DataFrame with columns id string, t array<float>, b array<float> of length dim
        ``join_previous``'s frame; valid vectors.
    f_t : ndarray, shape (dim, dim)
        Stabilized = t @ f_t.
    dim : int
    cfg : StabilizeConfig
        ``overlap_k``, ``overlap_queries``.
    queries : pyarrow Table with columns id, t, b, optional
        The churn's queries, in ``query_order`` (picked by the cross-Gram pass); None picks
        them here (one more pass).
    moved_threshold : float
        See ``same_id_pass``.

    Returns
    -------
    cosines_df : DataFrame with columns id string, raw double, stabilized double
        The moved shared ids (see ``same_id_pass``).
    cached : list
        What ``cosines_df`` reads (a persisted frame, a broadcast): the caller ``release``s it.
    metrics : dict
        cosine_raw_mean, cosine_raw_median, cosine_raw_p5 and the same for stabilized
        (float); when more than ``overlap_k`` ids are shared, ``churn_metrics``' keys
        (neighbour_overlap_at_<k>, neighbour_churn_share, overlap_queries, most_changed).
    """
    if queries is None:
        queries = pick_queries(joined, cfg.overlap_queries)
    result = same_id_pass(joined, f_t, dim, cfg.overlap_k, queries, moved_threshold)
    metrics = dict(result.cosine_metrics)
    log.info("same-id cosine to parent: raw %.3f, stabilized %.3f (mean)",
             metrics["cosine_raw_mean"], metrics["cosine_stabilized_mean"])
    if result.shared > cfg.overlap_k and result.query_ids:
        metrics.update(churn_metrics(result.query_ids, result.before, result.after, cfg.overlap_k))
        log.info("neighbour overlap@%d to parent over %d shared ids: %.3f for %d queries, %.1f%% of them "
                 "kept less than half their neighbours", cfg.overlap_k, result.shared,
                 metrics[f"neighbour_overlap_at_{cfg.overlap_k}"], len(result.query_ids),
                 100 * metrics["neighbour_churn_share"])
    return result.cosines_df, result.cached, metrics


# The queried items whose neighbourhoods changed most, kept in the metrics (and the report).
MOST_CHANGED = 20
_HASH_BITS = 53
QUERY_KEY = "_query_key"
# Cosine quantiles come from a histogram of this many equal bins over [-1, 1]: within 1e-4.
COSINE_BINS = 20000


def query_key(df: DataFrame):
    """Spark Column: the Efraimidis-Spirakis key of each id; the largest keys are the queries.

    Each id draws u in (0, 1) from its xxhash64 and gets the key log(u) / count; the largest
    keys win, so an item seen w times is about w times as likely to be queried, as it is w
    times as likely to be looked at. The draw depends on the id only, so the same items are
    queried from day to day while their counts hold. No ``count`` column (or a null count)
    weighs every id as 1: a uniform sample.
    """
    u = ((F.xxhash64("id").bitwiseAND(F.lit((1 << _HASH_BITS) - 1))).cast("double") + 0.5) / float(1 << _HASH_BITS)
    weight = (F.greatest(F.coalesce(F.col("count").cast("double"), F.lit(1.0)), F.lit(1.0))
              if "count" in df.columns else F.lit(1.0))
    return F.log(u) / weight


def query_order(df: DataFrame) -> list:
    """Sort keys whose first n rows are a count-weighted sample of ids, without replacement
    (``query_key`` descending, then id)."""
    return [query_key(df).desc(), F.col("id")]


def pick_queries(joined: DataFrame, n: int) -> pa.Table:
    """The first ``n`` rows of ``joined`` in ``query_order``: a table with columns id, t, b."""
    rows = joined.orderBy(*query_order(joined)).limit(n).select("id", "t", "b").collect() if n > 0 else []
    types = {f.name: pa.binary() if isinstance(f.dataType, BinaryType) else pa.list_(pa.float32())
             for f in joined.schema.fields if f.name in ("t", "b")}
    return pa.table({"id": pa.array([r.id for r in rows], type=pa.string()),
                     **{c: pa.array([r[c] for r in rows], type=types[c]) for c in ("t", "b")}})


@dataclass
class SameIdPass:
    """What ``same_id_pass`` gives.

    Attributes
    ----------
    shared : int
        Rows of the join.
    cosine_metrics : dict
        cosine_{raw,stabilized}_{mean,median,p5}.
    cosines_df : DataFrame with columns id string, raw double, stabilized double
        The moved ids, read from ``cached``.
    cached : list
        The pass's persisted output and the broadcast its plan reads: ``release`` them.
    query_ids, before, after : list
        As ``neighbour_churn`` returns them.
    """

    shared: int
    cosine_metrics: dict
    cosines_df: DataFrame
    cached: list
    query_ids: list
    before: list
    after: list


def same_id_pass(joined: DataFrame, f_t: np.ndarray, dim: int, k: int, queries: pa.Table,
                 moved_threshold: float = 0.0) -> SameIdPass:
    """One pass over the shared ids: same-id cosines and each query's k nearest, both versions.

    Per Arrow batch of ``joined``: the cosine of each id's raw and stabilized vector with the
    parent's (0 where a vector is zero), summed and binned (``COSINE_BINS`` bins: quantiles
    within 1e-4, exact means); the rows with 1 - stabilized cosine > ``moved_threshold`` are
    kept; and the queries (broadcast, a few hundred rows) are scored against every row on
    both sides (``knn.block_candidates``, the query's own row excluded), keeping each
    partition's k best. The partitions' results are merged (``linalg.reduce_partials``) by
    ``knn.merge_candidates``: score descending, then id ascending.

    Parameters
    ----------
    joined : DataFrame with columns id string, t array<float>, b array<float> of length dim
        ``join_previous``'s frame: ids unique, vectors valid.
    f_t : ndarray, shape (dim, dim)
        Stabilized = t @ f_t.
    dim, k : int
    queries : pyarrow Table with columns id string, t and b list<float> of length dim
        In ``query_order``; may be empty.
    moved_threshold : float

    Returns
    -------
    SameIdPass
        ``before`` / ``after``: per query, its min(k, shared - 1) nearest ids among the
        parent's vectors ``b`` / today's stabilized ``t @ f_t``.
    """
    f = np.asarray(f_t, dtype=np.float64)
    query_ids = queries.column("id").to_pylist()
    shape = (2, len(query_ids), k)
    q = np.zeros((2, 0, dim))
    if query_ids:
        q = np.stack([knn.unit_rows(np, linalg.batch_matrix(queries.column("t"), dim).astype(np.float64) @ f),
                      knn.unit_rows(np, linalg.batch_matrix(queries.column("b"), dim))])
    shared = joined.sparkSession.sparkContext.broadcast((query_ids, q))
    names = ["id", "raw", "stabilized", "partial", "cand_ids"]

    def partial(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        qids, qv = shared.value
        best = (np.full(shape, -np.inf, dtype=np.float32), np.full(shape, None, dtype=object))
        n, sums, hist = 0, np.zeros(2), np.zeros((2, COSINE_BINS), dtype=np.int64)
        for batch in batches:
            ids = batch.column("id")
            t, b = (linalg.batch_matrix(batch.column(c), dim) for c in ("t", "b"))
            if t is None or b is None:
                raise ValueError(f"a vector of the joined frame is null or not of length {dim}")
            t, b64 = t.astype(np.float64), b.astype(np.float64)
            stab = t @ f
            b_norm = np.linalg.norm(b64, axis=1)
            cos = [linalg.paired_cosines(x, b64, b_norm) for x in (t, stab)]
            n += len(cos[0])
            for i, c in enumerate(cos):
                sums[i] += c.sum()
                hist[i] += np.bincount(np.clip(((c + 1.0) * (COSINE_BINS / 2)).astype(np.int64), 0, COSINE_BINS - 1),
                                       minlength=COSINE_BINS)
            moved = 1.0 - cos[1] > moved_threshold
            m = int(moved.sum())
            if m:
                yield pa.record_batch([ids.filter(pa.array(moved)), pa.array(cos[0][moved]), pa.array(cos[1][moved]),
                                       pa.nulls(m, pa.binary()), pa.nulls(m, pa.list_(pa.string()))], names=names)
            if qids:
                # Each query's own row in this batch, if it is here: never its own neighbour.
                where = pc.index_in(pa.array(qids, type=ids.type), value_set=ids)
                exclude = where.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
                id_values = ids.to_numpy(zero_copy_only=False)
                found = [knn.block_candidates(qv[s], x, id_values, k, exclude) for s, x in enumerate((stab, b))]
                best = knn.merge_candidates(np.concatenate([best[0], np.stack([c[0] for c in found])], axis=-1),
                                            np.concatenate([best[1], np.stack([c[1] for c in found])], axis=-1), k)
        blob = np.concatenate([[n], sums, hist.ravel(), best[0].ravel().astype(np.float64)]).tobytes()
        yield pa.record_batch([pa.nulls(1, pa.string()), pa.nulls(1, pa.float64()), pa.nulls(1, pa.float64()),
                               pa.array([blob]), pa.array([best[1].ravel().tolist()], type=pa.list_(pa.string()))],
                              names=names)

    def parse(r):
        v = np.frombuffer(r.partial, dtype=np.float64)
        h = 3 + 2 * COSINE_BINS
        return (int(v[0]), v[1:3], v[3:h].reshape(2, COSINE_BINS),
                v[h:].astype(np.float32).reshape(shape), np.array(r.cand_ids, dtype=object).reshape(shape))

    def merge(a, b):
        scores, cand = knn.merge_candidates(np.concatenate([a[3], b[3]], axis=-1),
                                            np.concatenate([a[4], b[4]], axis=-1), k)
        return a[0] + b[0], a[1] + b[1], a[2] + b[2], scores, cand

    out = joined.select("id", "t", "b").mapInArrow(
        partial, "id string, raw double, stabilized double, partial binary, cand_ids array<string>")
    out = out.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        merged = linalg.reduce_partials(out.where(F.col("partial").isNotNull()), parse, merge)
    except BaseException:
        release([out, shared])
        raise
    if merged is None:
        merged = (0, np.zeros(2), np.zeros((2, COSINE_BINS)), None, np.full(shape, None, dtype=object))
    n, sums, hist, _, cand = merged
    metrics = {}
    for i, c in enumerate(("raw", "stabilized")):
        metrics[f"cosine_{c}_mean"] = float(sums[i] / n) if n else None
        metrics[f"cosine_{c}_median"] = _hist_quantile(hist[i], 0.5)
        metrics[f"cosine_{c}_p5"] = _hist_quantile(hist[i], 0.05)
    after, before = ([[x for x in row if x is not None] for row in side] for side in cand)
    cosines_df = out.where(F.col("partial").isNull()).select("id", "raw", "stabilized")
    # Reading the cache ships the pass's plan, broadcast included: both live until released.
    return SameIdPass(n, metrics, cosines_df, [out, shared], query_ids, before, after)


def release(cached: list) -> None:
    """Unpersist the DataFrames and destroy the broadcasts in ``cached``."""
    for x in cached:
        x.destroy() if isinstance(x, Broadcast) else x.unpersist()


def _hist_quantile(counts: np.ndarray, q: float) -> float | None:
    """The centre of the bin that holds the q-quantile of the values ``same_id_pass`` binned."""
    total = counts.sum()
    if total == 0:
        return None
    i = int(np.searchsorted(np.cumsum(counts), q * total))
    return float(-1.0 + (i + 0.5) * 2.0 / len(counts))


def neighbour_churn(joined: DataFrame, f_t: np.ndarray, dim: int, k: int, n_queries: int) -> tuple:
    """Each query's k nearest shared ids by cosine, today (stabilized) and in the parent.

    The queries are ``n_queries`` shared ids drawn in proportion to today's counts by
    ``query_order`` (seeded by the id's hash, so the same items from one day to the next
    while they stay); the search is ``same_id_pass``'s. Of ``joined``, only the queries'
    rows and each partition's candidates reach the driver.

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
    queries = pick_queries(joined, n_queries)
    if not queries.num_rows:
        return [], [], []
    result = same_id_pass(joined, f_t, dim, k, queries, moved_threshold=2.0)
    release(result.cached)
    return result.query_ids, result.before, result.after


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
