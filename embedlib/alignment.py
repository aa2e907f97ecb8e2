"""Step 3 on DataFrames: canonicalize (low-rank SVD of T W^T), align (Procrustes), gate.

Frames are (id string, vector array<float>, ...). Only e x e matrices reach the driver,
plus a small sample for the score-preservation metric. The passes over the vectors are in
``spark_passes``, the driver maths in ``linalg``, the same-id cosines and neighbour churn
in ``churn``; docs/stabilization.md derives them and says what each metric means.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from embedlib import churn, linalg, spark_passes
from embedlib.config import StabilizeConfig
from embedlib.errors import EmbedlibError
from embedlib.log import Phases, get_logger
from embedlib.vector_files import FileSource

log = get_logger(__name__)


class StabilizeError(EmbedlibError):
    """The inputs cannot be stabilized as configured, or a quality gate failed."""


@dataclass
class TodayAndParent:
    """One matrix (items, or the context/user side): today's raw vectors and the parent's.

    Attributes
    ----------
    name : str
        For messages, e.g. "items".
    df : DataFrame with columns id string, vector array<float>
        Today's raw vectors.
    prev_df : DataFrame with columns id string, vector array<float>, optional
        The parent version's published vectors; None for a root.
    source : FileSource, optional
        ``df``'s rows as Parquet files the tasks read with pyarrow (columns id, vector and,
        where there is one, count): the Gram pass and the join read them.
    prev_source : FileSource, optional
        The same for ``prev_df`` (id, vector).
    """

    name: str
    df: DataFrame
    prev_df: DataFrame | None = None
    source: FileSource | None = None
    prev_source: FileSource | None = None


@dataclass
class Stabilized:
    """What ``stabilize`` gives: today's valid raw vectors, the transforms, the metrics.

    The published vectors are the raw ones times the transform (``published``), written by
    the publication as it writes (``spark_passes.transform_batches``).

    Attributes
    ----------
    raw_items : DataFrame
        Today's valid raw item vectors (columns of the input, invalid rows dropped if so
        configured).
    raw_other : DataFrame or None
        The same for the other side.
    transform_items : ndarray, shape (e, e), float64
        published item vector = raw @ transform_items.
    transform_other : ndarray, shape (e, e), float64, or None
    mode : {"canonicalize_align", "align", "none"}
    root_reason : str or None
        Why this version is a root (no parent used), else None.
    metrics : dict of str to float, int or str
    cosines_df : DataFrame with columns id string, raw double, stabilized double, or None
        Same-id cosines to the parent of the shared item ids that moved (1 - stabilized >
        moved_threshold), for the delta; None for a root.
    items_source, other_source : FileSource or None
        The raw rows' files where the tasks can read them, for the publication's write.
    cached : list
        Frames and broadcasts kept for the publication (under cosines_df): ``release``.
    """

    raw_items: DataFrame
    raw_other: DataFrame | None
    transform_items: np.ndarray
    transform_other: np.ndarray | None
    mode: str
    root_reason: str | None
    metrics: dict = field(default_factory=dict)
    cosines_df: DataFrame | None = None
    items_source: FileSource | None = None
    other_source: FileSource | None = None
    cached: list = field(default_factory=list)

    def published(self, side: str = "items") -> DataFrame:
        """The published vectors of ``side`` ("items" or "other"): raw rows x transform. Lazy."""
        raw, m = (self.raw_items, self.transform_items) if side == "items" else (self.raw_other, self.transform_other)
        return spark_passes.apply_transform(raw, "vector", m)

    def release(self) -> None:
        """Unpersist what the stabilization kept cached for the publication."""
        spark_passes.release(self.cached)
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


def checked_gram(side: TodayAndParent, dim: int, cfg: StabilizeConfig) -> tuple[TodayAndParent, spark_passes.Gram]:
    """Gram of a side; bad vectors (null, wrong length, NaN/Inf) stop the job or are dropped.

    Parameters
    ----------
    side : TodayAndParent
        ``side.df`` with columns id string, vector array<float> of length dim.
    dim : int
    cfg : StabilizeConfig
        ``on_invalid_vectors`` ("error" or "drop").

    Returns
    -------
    side : TodayAndParent
        ``side``, without its bad rows when they were dropped.
    gram : spark_passes.Gram
        Of the valid vectors.

    Raises
    ------
    StabilizeError
        Bad vectors under "error" (the message gives example ids), or no valid vector.
    """
    g = spark_passes.gram(side.df, "vector", dim, side.source)
    if g.n_invalid:
        bad_df = side.df.where(spark_passes.invalid_vector("vector", dim))
        examples = [r.id for r in bad_df.select("id").limit(3).collect()]
        message = (f"{side.name}: {g.n_invalid} of {g.n_rows + g.n_invalid} vectors are null, not of "
                   f"length {dim}, or have NaN/Inf (e.g. ids {examples})")
        if cfg.on_invalid_vectors == "error":
            raise StabilizeError(message + "; set stabilize.on_invalid_vectors=drop to drop them")
        log.warning("%s: dropped", message)
        side = TodayAndParent(side.name, side.df.where(~spark_passes.invalid_vector("vector", dim)), side.prev_df,
                              prev_source=side.prev_source)
        g = dataclasses.replace(g, n_invalid=0)  # the pass summed the valid rows only: the same Gram
    if g.n_rows == 0:
        raise StabilizeError(f"{side.name}: no valid vector to stabilize")
    log.info("%s: Gram pass over %d vectors (dim %d)", side.name, g.n_rows, dim)
    return side, g


def canonical_transforms(g_t, g_w, cfg: StabilizeConfig, names=("items", "other")) -> tuple:
    """(M_T, M_W, metrics) of the low-rank SVD of T W^T from the two Gram matrices.

    Parameters
    ----------
    g_t, g_w : spark_passes.Gram
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


def join_previous(side: TodayAndParent, dim: int | None = None) -> DataFrame:
    """Today's raw vectors ``t`` next to the parent's published vectors ``b``, on shared ids.

    Where both sides have a ``FileSource`` (and ``dim`` is given) the tasks read the files
    with pyarrow and the vectors travel as binary (``FileSource.binary_vectors``): the
    shuffle, the cache and the passes then move each vector as one block.

    Parameters
    ----------
    side : TodayAndParent
        With ``prev_df``; ids unique on both sides.
    dim : int, optional

    Returns
    -------
    DataFrame with columns id string, t, b, count long
        t and b array<float> (or binary, see above; ``vector_codec.batch_matrix`` reads both).
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


def stabilize(items: TodayAndParent, other: TodayAndParent | None, cfg: StabilizeConfig,
              prev_dim: int | None = None, phases: Phases | None = None,
              moved_threshold: float = 0.0) -> Stabilized:
    """Canonicalize and/or align today's vectors to the parent version, with quality metrics.

    Parameters
    ----------
    items : TodayAndParent
        Item vectors; ``prev_df`` the parent version's published ones, None for a root.
    other : TodayAndParent, optional
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
    items, other, m_t, m_w, metrics = _canonicalized(items, other, dim, mode, cfg, phases)
    eye = np.eye(dim)
    root_reason = _root_reason(items, dim, prev_dim, mode, cfg)
    o, joined, queries = eye, None, None
    if root_reason is None:
        with phases("join_cross_gram"):
            o, joined, queries, align_metrics = _align(items, other, m_t, m_w, metrics["rows_items"], dim, cfg)
        metrics.update(align_metrics)
        if metrics.get("root_reason"):
            root_reason, o = metrics.pop("root_reason"), eye
    f_t = m_t @ o
    f_w = m_w @ o if m_w is not None else None
    with phases("score_sample"):
        sample = score_sample(items.df, other.df if other else None, cfg.score_sample)
        metrics.update(score_preservation(sample, f_t, f_w))
    log.info("score preservation: max relative error %.3g over %d sampled pairs",
             metrics["score_max_rel_err"], metrics["score_pairs"])
    cosines_df, cached = None, []
    if joined is not None and root_reason is None:
        with phases("same_id"):
            cosines_df, cached, same_id = churn.same_id_metrics(joined, f_t, dim, cfg, queries, moved_threshold)
        metrics.update(same_id)
    if joined is not None:
        joined.unpersist()
    if root_reason is None and cfg.smoothing < 1.0:
        metrics.update(smoothing_metrics(sample, items.prev_df, other.prev_df if other else None, f_t, f_w,
                                         cfg.smoothing))
    result = Stabilized(items.df, other.df if other else None, f_t, f_w, mode, root_reason, metrics, cosines_df,
                        items.source, other.source if other else None, cached)
    try:
        _check_gates(metrics, cfg)
    except StabilizeError:
        result.release()
        raise
    return result


def _canonicalized(items: TodayAndParent, other: TodayAndParent | None, dim: int, mode: str,
                   cfg: StabilizeConfig, phases: Phases) -> tuple:
    """(items, other, M_T, M_W, metrics): both sides' checked Grams (bad rows dropped or an
    error, ``checked_gram``) and, under canonicalize_align, the canonical transforms (the
    identity otherwise; M_W None without a second matrix)."""
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
    return items, other, m_t, m_w, metrics


def _root_reason(items: TodayAndParent, dim: int, prev_dim: int | None, mode: str, cfg) -> str | None:
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


def _align(items: TodayAndParent, other: TodayAndParent | None, m_t, m_w, n_items: int, dim: int, cfg) -> tuple:
    """(rotation, the persisted join, the churn's query rows, metrics); one pass over the join
    sums the cross-Gram and picks the queries (``query_order``'s first rows)."""
    joined = join_previous(items, dim)
    joined = joined.withColumn(churn.QUERY_KEY, churn.query_key(joined))
    joined = joined.persist(StorageLevel.DISK_ONLY)
    top = spark_passes.TopRowsRequest(cfg.overlap_queries, churn.QUERY_KEY) if cfg.overlap_queries > 0 else None
    cg = spark_passes.cross_gram(joined, "t", "b", dim, m_t, top)
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
        og = spark_passes.cross_gram(join_previous(other, dim), "t", "b", dim, m_w)
        cross += cfg.other_weight * og.cross
        metrics["rows_joined_other"] = og.n_rows
    o = linalg.procrustes_rotation(cross)
    metrics["alignment_residual"] = linalg.alignment_residual(cg.sq_norm_a, cg.cross, cg.sq_norm_b, o)
    log.info("aligned on %d shared ids: residual %.4g", cg.n_rows, metrics["alignment_residual"])
    return o, joined, cg.top, metrics


@dataclass
class ScoreSample:
    """The rows of each side that the score metrics use: the first ``stabilize.score_sample``
    (any rows check the arithmetic, and a limit reads one file split instead of every vector).

    Attributes
    ----------
    item_ids : list of str
    items : ndarray, shape (m, e), float64
        Raw T.
    other_ids : list of str or None
    other : ndarray, shape (m', e), float64, or None
        Raw W; None without a second matrix.
    """

    item_ids: list
    items: np.ndarray
    other_ids: list | None = None
    other: np.ndarray | None = None


def score_sample(items_df: DataFrame, other_df: DataFrame | None, n: int) -> ScoreSample:
    """The first ``n`` rows (id, vector) of each side, read once for every score metric."""
    item_ids, items = _first_rows(items_df, n)
    other_ids, other = _first_rows(other_df, n) if other_df is not None else (None, None)
    return ScoreSample(item_ids, items, other_ids, other)


def score_preservation(sample: ScoreSample, f_t, f_w) -> dict:
    """Max |S_new - S_raw| / max |S_raw| over the sampled pairs, with float32 storage of S_new.

    S = T W^T (item x other) when there is a second matrix, else T T^T (item x item);
    published T = raw T @ f_t, published W = raw W @ f_w (f_w unused without W).

    Returns
    -------
    dict
        score_max_rel_err (float; 0 when S_raw is zero), score_pairs (int).
    """
    t = sample.items
    w, f_other = (sample.other, f_w) if sample.other is not None else (t, f_t)
    before = t @ w.T
    after = (t @ f_t).astype(np.float32).astype(np.float64) @ (w @ f_other).astype(np.float32).astype(np.float64).T
    return {"score_max_rel_err": _max_rel_err(after, before), "score_pairs": int(before.size)}


def smoothing_metrics(sample: ScoreSample, items_prev_df: DataFrame, other_prev_df: DataFrame | None,
                      f_t, f_w, beta: float) -> dict:
    """What temporal smoothing costs (``stabilize.smoothing`` = beta < 1, a chained version).

    Returns
    -------
    dict
        smoothing (beta); smoothing_versions_to_90pct: log(0.1) / log(1 - beta), the versions a
        changed item needs to move 90% of the way to its new vector (freshness);
        smoothed_score_max_rel_err: max |S_published - S_raw| / max |S_raw| over the sampled
        pairs of ``score_preservation`` when the smoothed vectors are published (recorded,
        not gated: published scores are no longer those of one trained model).
    """
    t = sample.items
    t_pub = _smoothed_rows(sample.item_ids, t @ f_t, items_prev_df, beta)
    if sample.other is not None:
        w = sample.other
        w_pub = _smoothed_rows(sample.other_ids, w @ f_w, other_prev_df, beta) if other_prev_df is not None else w @ f_w
    else:
        w, w_pub = t, t_pub
    return {"smoothing": beta, "smoothing_versions_to_90pct": linalg.versions_to_90pct(beta),
            "smoothed_score_max_rel_err": _max_rel_err(t_pub @ w_pub.T, t @ w.T)}


def _max_rel_err(after: np.ndarray, before: np.ndarray) -> float:
    scale = np.abs(before).max()
    return float(np.abs(after - before).max() / scale) if scale > 0 else 0.0


def _smoothed_rows(ids: list, aligned: np.ndarray, prev_df: DataFrame, beta: float) -> np.ndarray:
    """beta * aligned + (1 - beta) * the parent's vector (``prev_df``, published), row by row
    where the parent has the id; only the sampled ids' rows reach the driver."""
    ids_df = prev_df.sparkSession.createDataFrame([(i,) for i in ids], "id string")
    found = {r.id: r.vector for r in prev_df.join(F.broadcast(ids_df), on="id", how="inner").collect()}
    out = aligned.copy()
    for k, i in enumerate(ids):
        if i in found:
            out[k] = linalg.smoothed(aligned[k], np.asarray(found[i], dtype=np.float64), beta)
    return out


def _first_rows(df: DataFrame, n: int) -> tuple[list, np.ndarray]:
    """(ids, float64 matrix) of the first n rows of ``df``."""
    rows = df.select("id", "vector").limit(n).collect()
    return [r.id for r in rows], np.array([r.vector for r in rows], dtype=np.float64)


def _check_gates(metrics: dict, cfg: StabilizeConfig) -> None:
    err = metrics.get("score_max_rel_err", 0.0)
    if not np.isfinite(err) or err > cfg.max_score_error:
        raise StabilizeError(f"quality gate: score preservation error {err:.3g} is above "
                             f"stabilize.max_score_error={cfg.max_score_error:g}; nothing published")
    floor, cos = cfg.min_stabilized_cosine, metrics.get("cosine_stabilized_mean")
    if floor is not None and cos is not None and cos < floor:
        raise StabilizeError(f"quality gate: mean stabilized same-id cosine {cos:.3f} is below "
                             f"stabilize.min_stabilized_cosine={floor}; nothing published")
