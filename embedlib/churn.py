"""Same-id cosines and neighbour churn between a version and its parent, in one Spark pass.

For the shared ids of ``alignment.join_previous``'s frame: the cosine of each id's raw and
stabilized vector with the parent's (means exact, quantiles from a histogram), the ids that
moved (for the delta), and, for a few hundred queried ids drawn in proportion to their
counts, their k nearest shared ids in both versions (overlap@k, churn share, the most
changed items). docs/stabilization.md ("Neighbour churn") says what the figures mean.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType

from embedlib import knn
from embedlib.config import StabilizeConfig
from embedlib.linalg import paired_cosines, smoothed
from embedlib.log import get_logger
from embedlib.spark_passes import reduce_partials, release
from embedlib.vector_codec import batch_matrix, checked_matrix

log = get_logger(__name__)


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
        The queries in ``query_order``; per query, its nearest ids among the parent's
        vectors (``before``) and today's stabilized ones (``after``).
    """

    shared: int
    cosine_metrics: dict
    cosines_df: DataFrame
    cached: list
    query_ids: list
    before: list
    after: list


def same_id_pass(joined: DataFrame, f_t: np.ndarray, dim: int, k: int, queries: pa.Table,
                 moved_threshold: float = 0.0, smoothing: float = 1.0) -> SameIdPass:
    """One pass over the shared ids: same-id cosines and each query's k nearest, both versions.

    Per Arrow batch of ``joined``: the cosine of each id's raw and stabilized vector with the
    parent's (0 where a vector is zero), summed and binned (``COSINE_BINS`` bins: quantiles
    within 1e-4, exact means); the rows with 1 - stabilized cosine > ``moved_threshold`` are
    kept; and the queries (broadcast, a few hundred rows) are scored against every row on
    both sides (``knn.block_candidates``, the query's own row excluded), keeping each
    partition's k best. The partitions' results are merged (``spark_passes.reduce_partials``)
    by ``knn.merge_candidates``: score descending, then id ascending.

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
    smoothing : float
        The stabilized (published) vector of a shared id is
        ``smoothing * t @ f_t + (1 - smoothing) * b`` (``stabilize.smoothing``; 1 = ``t @ f_t``).

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
        qb = batch_matrix(queries.column("b"), dim).astype(np.float64)
        qt = smoothing * (batch_matrix(queries.column("t"), dim).astype(np.float64) @ f) + (1.0 - smoothing) * qb
        q = np.stack([knn.unit_rows(np, qt), knn.unit_rows(np, qb)])
    query_bc = joined.sparkSession.sparkContext.broadcast((query_ids, q))
    scan = _PartitionScan(query_bc, f, dim, k, shape, moved_threshold, smoothing)
    out = joined.select("id", "t", "b").mapInArrow(
        scan, "id string, raw double, stabilized double, partial binary, cand_ids array<string>")
    out = out.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        merged = reduce_partials(out.where(F.col("partial").isNotNull()), scan.parse, scan.merge)
    except BaseException:
        release([out, query_bc])
        raise
    if merged is None:
        merged = (0, np.zeros(2), np.zeros((2, COSINE_BINS)), None, np.full(shape, None, dtype=object))
    n, sums, hist, _, cand = merged
    after, before = ([[x for x in row if x is not None] for row in side] for side in cand)
    cosines_df = out.where(F.col("partial").isNull()).select("id", "raw", "stabilized")
    # Reading the cache ships the pass's plan, broadcast included: both live until released.
    return SameIdPass(n, cosine_metrics(n, sums, hist), cosines_df, [out, query_bc], query_ids, before, after)


_NAMES = ["id", "raw", "stabilized", "partial", "cand_ids"]


class _PartitionScan:
    """``same_id_pass``'s work in one partition (``__call__``, for ``mapInArrow``): the moved
    rows, then one row with the partition's sums, histograms and candidates (``partial``,
    ``cand_ids``), which ``parse`` reads and ``merge`` combines."""

    def __init__(self, query_bc, f: np.ndarray, dim: int, k: int, shape: tuple, moved_threshold: float,
                 smoothing: float):
        self.query_bc, self.f, self.dim, self.k = query_bc, f, dim, k
        self.shape, self.moved_threshold, self.smoothing = shape, moved_threshold, smoothing

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        qids, qv = self.query_bc.value
        qid_array = pa.array(qids, type=pa.string())
        best = (np.full(self.shape, -np.inf, dtype=np.float32), np.full(self.shape, None, dtype=object))
        n, sums, hist = 0, np.zeros(2), np.zeros((2, COSINE_BINS), dtype=np.int64)
        for batch in batches:
            ids = batch.column("id")
            t, b = (checked_matrix(batch, c, self.dim) for c in ("t", "b"))
            t, b64 = t.astype(np.float64), b.astype(np.float64)
            stab = t @ self.f
            if self.smoothing < 1.0:  # what is published: docs/stabilization.md, temporal smoothing
                stab = smoothed(stab, b64, self.smoothing)
            b_norm = np.linalg.norm(b64, axis=1)
            cos = [paired_cosines(x, b64, b_norm) for x in (t, stab)]
            n += len(cos[0])
            for i, c in enumerate(cos):
                sums[i] += c.sum()
                hist[i] += np.bincount(np.clip(((c + 1.0) * (COSINE_BINS / 2)).astype(np.int64), 0, COSINE_BINS - 1),
                                       minlength=COSINE_BINS)
            moved = 1.0 - cos[1] > self.moved_threshold
            if moved.any():
                m = int(moved.sum())
                yield pa.record_batch([ids.filter(pa.array(moved)), pa.array(cos[0][moved]), pa.array(cos[1][moved]),
                                       pa.nulls(m, pa.binary()), pa.nulls(m, pa.list_(pa.string()))], names=_NAMES)
            if qids:
                best = self._candidates(best, qid_array, qv, ids, (stab, b))
        blob = np.concatenate([[n], sums, hist.ravel(), best[0].ravel().astype(np.float64)]).tobytes()
        yield pa.record_batch([pa.nulls(1, pa.string()), pa.nulls(1, pa.float64()), pa.nulls(1, pa.float64()),
                               pa.array([blob]), pa.array([best[1].ravel().tolist()], type=pa.list_(pa.string()))],
                              names=_NAMES)

    def _candidates(self, best: tuple, qids: pa.Array, qv: np.ndarray, ids: pa.Array, sides: tuple) -> tuple:
        """``best`` merged with the queries' k best rows of this batch, per side."""
        # Each query's own row in this batch, if it is here: never its own neighbour.
        where = pc.index_in(qids if qids.type == ids.type else qids.cast(ids.type), value_set=ids)
        exclude = where.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        id_values = ids.to_numpy(zero_copy_only=False)
        found = [knn.block_candidates(qv[s], x, id_values, self.k, exclude) for s, x in enumerate(sides)]
        return knn.merge_candidates(np.concatenate([best[0], np.stack([c[0] for c in found])], axis=-1),
                                    np.concatenate([best[1], np.stack([c[1] for c in found])], axis=-1), self.k)

    def parse(self, r) -> tuple:
        v = np.frombuffer(r.partial, dtype=np.float64)
        h = 3 + 2 * COSINE_BINS
        return (int(v[0]), v[1:3], v[3:h].reshape(2, COSINE_BINS),
                v[h:].astype(np.float32).reshape(self.shape), np.array(r.cand_ids, dtype=object).reshape(self.shape))

    def merge(self, a: tuple, b: tuple) -> tuple:
        scores, cand = knn.merge_candidates(np.concatenate([a[3], b[3]], axis=-1),
                                            np.concatenate([a[4], b[4]], axis=-1), self.k)
        return a[0] + b[0], a[1] + b[1], a[2] + b[2], scores, cand


def cosine_metrics(n: int, sums: np.ndarray, hist: np.ndarray) -> dict:
    """cosine_{raw,stabilized}_{mean,median,p5} from the pass's sums and histograms."""
    metrics = {}
    for i, c in enumerate(("raw", "stabilized")):
        metrics[f"cosine_{c}_mean"] = float(sums[i] / n) if n else None
        metrics[f"cosine_{c}_median"] = _hist_quantile(hist[i], 0.5)
        metrics[f"cosine_{c}_p5"] = _hist_quantile(hist[i], 0.05)
    return metrics


def _hist_quantile(counts: np.ndarray, q: float) -> float | None:
    """The centre of the bin that holds the q-quantile of the values ``same_id_pass`` binned."""
    total = counts.sum()
    if total == 0:
        return None
    i = int(np.searchsorted(np.cumsum(counts), q * total))
    return float(-1.0 + (i + 0.5) * 2.0 / len(counts))


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
    result = same_id_pass(joined, f_t, dim, cfg.overlap_k, queries, moved_threshold, cfg.smoothing)
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
