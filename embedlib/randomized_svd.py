"""Randomized low-rank SVD of a sparse Spark matrix (Halko, Martinsson & Tropp 2011), with
Gram-Cholesky in place of every QR.

M is a frame of entries ``row string, col string, value double``; tall n x l matrices are
frames ``id string, vec array<double>`` ("dense frames"), one row per id. Each pass is one
Spark job; only l x l matrices come to the driver:

- ``hashed_rows``: the test matrix Omega, each context's row drawn from a counter-based
  generator keyed by a hash of (seed, id): the same id gets the same row in every task, run
  and version, whatever the vocabulary around it; nothing is broadcast.
- ``multiply``: M X (or M^T X) for a dense frame X, times an l x k matrix applied in the tasks.
- ``gram``: (X T)^T (X T), summed over partitions in partition order (deterministic).
- ``orthonormalize``: CholeskyQR: G = Y^T Y, G = R^T R (``linalg.cholesky_factor``), Q = Y R^-1
  kept as the pair (Y, R^-1) and applied by the next pass; a second round (CholeskyQR2) when
  cond(G) > QR2_CONDITION, since one round leaves Q^T Q - I of about u cond(G).

docs/pipeline.md ("The count-based trainer") gives the algorithm and its costs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import scipy.linalg
from pyspark import StorageLevel, TaskContext
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from embedlib import linalg
from embedlib.log import get_logger

log = get_logger(__name__)

DENSE_SCHEMA = "id string, vec array<double>"
VECTOR_SCHEMA = "id string, vector array<float>"
# One CholeskyQR round leaves ||Q^T Q - I|| of about u cond(G) (u = 1.1e-16): above this
# condition a second round brings it to machine precision (CholeskyQR2, valid to cond(G)
# of about 1e16).
QR2_CONDITION = 1e4
# Directions of Y whose Gram eigenvalue is below this times the largest (float64 rounding
# of the Gram; cond(Y) above ~3e7) carry no range information: cholesky_factor drops them
# (eigh) instead of dividing by them.
ORTH_RCOND = 1e-15
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def omega_rows(keys: np.ndarray, width: int) -> np.ndarray:
    """Standard normal rows from 64-bit keys: splitmix64 of (key, column), Box-Muller.

    Parameters
    ----------
    keys : ndarray of int64 or uint64, shape (n,)
    width : int

    Returns
    -------
    ndarray, shape (n, width), float64
        Row i depends on keys[i] and width only.
    """
    keys = np.asarray(keys).astype(np.uint64)
    half = (width + 1) // 2
    counters = np.arange(1, 2 * half + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = keys[:, None] + counters[None, :] * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    radius = np.sqrt(-2.0 * np.log1p(-u[:, :half]))
    angle = 2.0 * np.pi * u[:, half:]
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)], axis=1)[:, :width]


def _matrix(arr: pa.Array, width: int) -> np.ndarray:
    """A list<double> column (no nulls) as an (n, width) float64 matrix."""
    if isinstance(arr, pa.ChunkedArray):
        arr = pa.concat_arrays(arr.chunks)
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), width)


def _dense_batch(ids, matrix: np.ndarray, col_name: str = "vec") -> pa.RecordBatch:
    """(id, list column) rows from an (n, k) matrix; its dtype (float64 or float32) is kept."""
    values = pa.array(np.ascontiguousarray(matrix).ravel())
    offsets = pa.array(np.arange(len(matrix) + 1, dtype=np.int32) * matrix.shape[1])
    return pa.RecordBatch.from_arrays(
        [pa.array(ids, pa.string()), pa.ListArray.from_arrays(offsets, values)], names=["id", col_name])


def hashed_rows(ids_df: DataFrame, width: int, seed: int) -> DataFrame:
    """Omega as a dense frame: for each ``id`` of ``ids_df``, ``omega_rows`` of
    xxhash64(seed, id)."""
    def rows(batches):
        for batch in batches:
            keys = batch.column("key").to_numpy()
            yield _dense_batch(batch.column("id"), omega_rows(keys, width))

    return (ids_df.select("id", F.xxhash64(F.lit(int(seed)), "id").alias("key"))
            .mapInArrow(rows, DENSE_SCHEMA))


def multiply(entries_df: DataFrame, dense_df: DataFrame, width: int, t: np.ndarray,
             transpose: bool = False) -> DataFrame:
    """M (X T), or M^T (X T): a dense frame of width T.shape[1], persisted.

    The entries are joined with X's rows at their column (row for M^T) and gathered by the
    output id, sorted by (id, other id): each output row is summed in one fixed order, so
    the result does not depend on the input's partitioning. T is applied after the sum.
    """
    out_col, in_col = ("col", "row") if transpose else ("row", "col")
    partitions = int(entries_df.sparkSession.conf.get("spark.sql.shuffle.partitions"))

    def segment_sums(batches):
        carry_id, carry = None, None
        for batch in batches:
            if batch.num_rows == 0:
                continue
            ids = batch.column("id").to_numpy(zero_copy_only=False)
            x = _matrix(batch.column("vec"), width) * batch.column("value").to_numpy()[:, None]
            starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
            sums, seg_ids = np.add.reduceat(x, starts, axis=0), ids[starts]
            if carry_id is not None and seg_ids[0] == carry_id:
                sums[0] = carry + sums[0]
            elif carry_id is not None:
                yield _dense_batch([carry_id], carry[None, :] @ t)
            if len(seg_ids) > 1:
                yield _dense_batch(seg_ids[:-1], sums[:-1] @ t)
            carry_id, carry = seg_ids[-1], sums[-1]
        if carry_id is not None:
            yield _dense_batch([carry_id], carry[None, :] @ t)

    x_df = dense_df.select(F.col("id").alias("other"), "vec")
    return (entries_df.select(F.col(out_col).alias("id"), F.col(in_col).alias("other"), "value")
            .join(x_df, on="other", how="inner")
            .repartition(partitions, "id")
            .sortWithinPartitions("id", "other")
            .select("id", "value", "vec")
            .mapInArrow(segment_sums, DENSE_SCHEMA)
            .persist(StorageLevel.MEMORY_AND_DISK))


def gram(dense_df: DataFrame, width: int, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(X T)^T (X T) and the column sums of X: shapes (k, k) and (width,), float64.

    One partial per partition, summed on the driver in partition order.
    """
    k = t.shape[1]

    def partial(batches):
        g, sums = np.zeros((k, k)), np.zeros(width)
        for batch in batches:
            x = _matrix(batch.column("vec"), width)
            q = x @ t
            g += q.T @ q
            sums += x.sum(axis=0)
        yield pa.RecordBatch.from_pydict(
            {"part": pa.array([TaskContext.get().partitionId()], pa.int32()),
             "g": pa.array([np.concatenate([g.ravel(), sums]).tobytes()], pa.binary())})

    rows = sorted(dense_df.select("vec").mapInArrow(partial, "part int, g binary").collect())
    total = np.zeros(k * k + width)
    for row in rows:
        total += np.frombuffer(row.g, dtype=np.float64)
    return total[:k * k].reshape(k, k), total[k * k:]


@dataclass
class Orthonormal:
    """Q = Y t with Q^T Q = I and Y = Q r (up to dropped null directions).

    t : ndarray, shape (width, k); r : ndarray, shape (k, width); k <= width.
    conditions : the Gram condition numbers of each round; col_sums : Y's column sums.
    """

    t: np.ndarray
    r: np.ndarray
    conditions: list = field(default_factory=list)
    col_sums: np.ndarray | None = None


def _inverse(factor: linalg.Factor) -> np.ndarray:
    """A right inverse of R (R T = I): R^-1 for a Cholesky factor, the pseudo-inverse for eigh."""
    if factor.method == "cholesky":
        return scipy.linalg.solve_triangular(factor.r, np.eye(factor.r.shape[0]), lower=False)
    return np.linalg.pinv(factor.r)


def orthonormalize(dense_df: DataFrame, width: int, name: str = "Y") -> Orthonormal:
    """CholeskyQR of a dense frame, CholeskyQR2 when its Gram is ill-conditioned."""
    g, col_sums = gram(dense_df, width, np.eye(width))
    factor = linalg.cholesky_factor(g, ORTH_RCOND, "eigh", name)
    t, r, conditions = _inverse(factor), factor.r, [factor.condition]
    if factor.condition > QR2_CONDITION or factor.method != "cholesky":
        g2, _ = gram(dense_df, width, t)
        second = linalg.cholesky_factor(g2, ORTH_RCOND, "eigh", name)
        t, r = t @ _inverse(second), second.r @ r
        conditions.append(second.condition)
    return Orthonormal(t, r, conditions, col_sums)


def to_vectors(dense_df: DataFrame, width: int, t: np.ndarray) -> DataFrame:
    """``id string, vector array<float>``: the rows of X T (float32)."""
    def rows(batches):
        for batch in batches:
            x = _matrix(batch.column("vec"), width) @ t
            yield _dense_batch(batch.column("id"), x.astype(np.float32), "vector")

    return dense_df.mapInArrow(rows, VECTOR_SCHEMA)


@dataclass
class SvdResult:
    """Rank-r factors of M: ``item_df`` rows U S^p (M's rows), ``context_df`` rows V S^(1-p)
    (M's columns), both ``id string, vector array<float>`` and lazy over persisted frames."""

    item_df: DataFrame
    context_df: DataFrame
    singular_values: np.ndarray
    phases: dict
    conditions: list
    cached: list  # the persisted frames the vectors are read from: release them after use


class _Phases(dict):
    """Wall seconds per named pass (the pass's Spark job runs inside the ``with``)."""

    def timed(self, name: str, fn, *args):
        started = time.perf_counter()
        result = fn(*args)
        self[name] = time.perf_counter() - started
        return result


def randomized_svd(entries_df: DataFrame, rank: int, oversample: int, power_iterations: int,
                   seed: int, eigen_weight: float) -> SvdResult:
    """The rank-``rank`` SVD M ~= U S V^T by a randomized range finder of l = rank + oversample
    columns and ``power_iterations`` rounds of (M M^T), each product orthonormalized.

    B = Q^T M is never formed: its transpose Z = M^T Q is a dense frame over M's columns,
    Z = Q_z R_z (CholeskyQR), and the SVD of the small R_z^T = U_b S W^T gives
    U = Q U_b and V = Q_z W. Column signs: U's column sums positive.
    """
    width, phases, conditions = rank + oversample, _Phases(), []
    omega_df = hashed_rows(entries_df.select(F.col("col").alias("id")).distinct(), width, seed)
    y_df = multiply(entries_df, omega_df, width, np.eye(width))
    q = phases.timed("range_m_omega", orthonormalize, y_df, width, "M Omega")
    conditions.append(q.conditions)
    for i in range(power_iterations):
        z_df = multiply(entries_df, y_df, width, q.t, transpose=True)
        qz = phases.timed(f"power{i + 1}_mt_q", orthonormalize, z_df, q.t.shape[1], "M^T Q")
        y_df.unpersist()
        y_df, width = multiply(entries_df, z_df, q.t.shape[1], qz.t), qz.t.shape[1]
        q = phases.timed(f"power{i + 1}_m_q", orthonormalize, y_df, width, "M Q")
        z_df.unpersist()
        conditions += [qz.conditions, q.conditions]
    z_df = multiply(entries_df, y_df, width, q.t, transpose=True)
    qz = phases.timed("b_transpose", orthonormalize, z_df, q.t.shape[1], "M^T Q")
    conditions.append(qz.conditions)
    started = time.perf_counter()
    u_b, s, w_t = np.linalg.svd(qz.r.T, full_matrices=False)
    kept = min(rank, int(np.sum(s > s[0] * 1e-12)) if s.size else 0)
    if kept < rank:
        log.warning("ppmi_svd: M has numerical rank %d < train.vector_size %d; the last "
                    "%d dimensions are zero", kept, rank, rank - kept)
    signs = np.sign(q.col_sums @ q.t @ u_b[:, :kept])
    signs[signs == 0] = 1
    item_t, context_t = np.zeros((width, rank)), np.zeros((qz.t.shape[0], rank))
    item_t[:, :kept] = q.t @ u_b[:, :kept] * (signs * s[:kept] ** eigen_weight)
    context_t[:, :kept] = qz.t @ w_t[:kept].T * (signs * s[:kept] ** (1 - eigen_weight))
    phases["small_svd"] = time.perf_counter() - started
    return SvdResult(to_vectors(y_df, width, item_t), to_vectors(z_df, qz.t.shape[0], context_t),
                     s[:kept], dict(phases), conditions, [y_df, z_df])
