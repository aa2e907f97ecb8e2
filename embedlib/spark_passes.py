"""The Spark passes over vector frames: n x e data in, e x e sums (and a few rows) out.

Every pass over an (id, vector array<float> or binary) frame runs on Arrow record batches
(``mapInArrow``): the vector column's values buffer is flattened and reshaped to an n x e
matrix (``vector_codec.batch_matrix``), so each batch costs one BLAS call instead of n
Python-level row operations. Per-partition results are combined by ``reduce_partials``:
summed on the driver when there are few, by a tree reduction on the executors otherwise.
The e x e maths on the driver is in ``linalg``; docs/stabilization.md derives both.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.broadcast import Broadcast
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from embedlib.linalg import paired_cosines, smoothed
from embedlib.vector_codec import batch_matrix, checked_matrix, list_column, valid_rows
from embedlib.vector_files import FileSource


def invalid_vector(col_name: str, dim: int):
    """Spark Column: true where the vector is null, of the wrong length, or not all finite.

    Parameters
    ----------
    col_name : str
        An array<float> column.
    dim : int
        The length a valid vector has.

    Returns
    -------
    Column of boolean, never null
    """
    col = F.col(col_name)
    bad_value = F.exists(col, lambda x: x.isNull() | F.isnan(x) | (F.abs(x) == float("inf")))
    return col.isNull() | (F.size(col) != dim) | bad_value


# Up to this many per-partition partials (e x e float64 each, 2 e^2 + 1 for a cross-Gram)
# are summed on the driver; past it they are combined with a tree reduction on the executors.
FLAT_REDUCE_MAX_PARTITIONS = 64


@dataclass
class Gram:
    """X^T X of a vector column (e x e, float64) over its valid rows.

    Attributes
    ----------
    matrix : ndarray, shape (dim, dim), float64
    n_rows, n_invalid, dim : int
        Valid rows (summed), invalid rows (counted, not summed), vector length.
    """

    matrix: np.ndarray
    n_rows: int
    n_invalid: int  # rows with a null, wrong-length or non-finite vector: counted, not summed
    dim: int


@dataclass
class CrossGram:
    """A^T B over joined rows, A = (column a) @ transform, B = column b: what Procrustes needs.

    Attributes
    ----------
    cross : ndarray, shape (e, e), float64
    sq_norm_a, sq_norm_b : float
    n_rows, n_invalid : int
        Rows summed (both vectors valid), rows with a bad vector in either column (counted).
    """

    cross: np.ndarray  # (e, e), float64
    sq_norm_a: float  # ||A||_F^2
    sq_norm_b: float  # ||B||_F^2
    n_rows: int
    n_invalid: int
    top: pa.Table | None = None  # the rows asked for by ``top``, best first


@dataclass
class TopRowsRequest:
    """Ask a row pass for the ``n`` rows with the largest ``key`` (ties: the smaller id).

    Attributes
    ----------
    n : int
    key_col : str
        A double column of the frame, never null.
    id_col : str
    """

    n: int
    key_col: str
    id_col: str = "id"


def top_rows(table: pa.Table, top: TopRowsRequest) -> pa.Table:
    """The ``top.n`` rows of ``table`` by ``top.key_col`` descending, then id ascending."""
    order = pc.sort_indices(table, sort_keys=[(top.key_col, "descending"), (top.id_col, "ascending")])
    return table.take(order[:top.n])


def reduce_partials(partials: DataFrame, parse, merge):
    """Combine the one-row-per-partition results of a pass: on the driver when there are at
    most ``FLAT_REDUCE_MAX_PARTITIONS``, else by a tree reduction on the executors.

    Parameters
    ----------
    partials : DataFrame
        E.g. the output of a ``mapInArrow`` pass that yields one row per partition.
    parse : callable
        Row -> partial (picklable).
    merge : callable
        (partial, partial) -> partial, associative (picklable).

    Returns
    -------
    The merged partial, or None when ``partials`` has no partition or no row.
    """
    n_parts = partials.rdd.getNumPartitions()
    if n_parts == 0:
        return None
    if n_parts <= FLAT_REDUCE_MAX_PARTITIONS:
        # Few partials: combining them on the driver saves the extra Python stage of a tree.
        parsed = [parse(r) for r in partials.collect()]
        return functools.reduce(merge, parsed) if parsed else None
    return partials.rdd.map(parse).treeReduce(merge, depth=2)


@dataclass
class RowScan:
    """What ``scan_rows`` gives.

    Attributes
    ----------
    sums : ndarray, shape (size,), float64
        The kernel summed over the valid rows; zeros when the frame has no partition.
    n_rows, n_invalid : int
        Valid rows (summed), invalid rows (counted, not summed).
    top : pyarrow Table or None
        The rows asked for by a ``TopRowsRequest``, best first; None without one.
    """

    sums: np.ndarray
    n_rows: int
    n_invalid: int
    top: pa.Table | None = None


def scan_rows(df: DataFrame, cols: Sequence[str], dim: int, size: int, kernel,
              top: TopRowsRequest | None = None, source: FileSource | None = None) -> RowScan:
    """One pass over ``df``: ``kernel`` summed over the valid rows, rows counted, top rows kept.

    A row is invalid when a vector in ``cols`` breaks the rule of ``vector_codec``.

    Parameters
    ----------
    df : DataFrame with columns ``cols``, each array<float> (or binary) of length dim
    cols : sequence of str
    dim, size : int
        Vector length; length of the kernel's output.
    kernel : callable
        ``kernel(blocks)`` maps the float64 (m, dim) matrices of ``cols`` for one Arrow batch
        (a list, in the order of ``cols``) to a flat float64 array of shape (size,): a sum over
        the rows that is non-finite when a row has a NaN/Inf (true of any sum of squares), so
        rows are scanned for them only then. It runs on the executors (picklable).
    top : TopRowsRequest, optional
        Also keep, in the same pass, the valid rows with the largest key (what
        ``df.orderBy(key desc, id).limit(n)`` would give), with columns id, key and ``cols``.
    source : FileSource, optional
        The same rows as ``df``, read by the tasks with pyarrow instead of through Spark.

    Returns
    -------
    RowScan
    """
    cols = list(cols)
    picked = [top.id_col, top.key_col] if top else []

    def partial(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        acc, n, n_bad, best = np.zeros(size), 0, 0, None
        for batch in batches:
            batch, blocks, out, bad = _kernel_over_valid(batch, cols, dim, kernel)
            acc += out
            n, n_bad = n + blocks[0].shape[0], n_bad + bad
            if top:
                rows = pa.Table.from_batches([batch.select(picked + cols)])
                best = top_rows(rows if best is None else pa.concat_tables([best, rows]), top)
        yield pa.record_batch([pa.array([n]), pa.array([n_bad]), pa.array([acc.tobytes()]),
                               pa.array([_ipc_bytes(best)], type=pa.binary())],
                              names=["n", "n_bad", "acc", "top"])

    def parse(r):
        return r.n, r.n_bad, np.frombuffer(r.acc, dtype=np.float64), _from_ipc(r.top)

    def add(a, b):
        best = [t for t in (a[3], b[3]) if t is not None]
        best = top_rows(pa.concat_tables(best), top) if len(best) > 1 else (best[0] if best else None)
        return a[0] + b[0], a[1] + b[1], a[2] + b[2], best

    schema = "n long, n_bad long, acc binary, top binary"
    wanted = list(dict.fromkeys(picked + cols))
    if source is not None:
        partials = source.map_batches(df.sparkSession, partial, wanted, schema)
    else:
        partials = df.select(*wanted).mapInArrow(partial, schema)
    merged = reduce_partials(partials, parse, add)
    if merged is None:
        return RowScan(np.zeros(size), 0, 0, None)
    n, n_bad, flat, best = merged
    return RowScan(flat.copy(), n, n_bad, best)


def _kernel_over_valid(batch: pa.RecordBatch, cols: list, dim: int, kernel) -> tuple:
    """(the batch's valid rows, their float64 matrices of ``cols``, the kernel's sum over
    them, how many rows were bad)."""
    blocks = [batch_matrix(batch.column(c), dim) for c in cols]
    bad = 0
    if any(b is None for b in blocks):  # rare: the row-by-row rule only then
        keep = valid_rows(batch, cols, dim)
        batch, bad = batch.filter(pa.array(keep)), int((~keep).sum())
        blocks = [batch_matrix(batch.column(c), dim) for c in cols]
    blocks = [b.astype(np.float64) for b in blocks]
    out = kernel(blocks)
    if not np.isfinite(out).all():  # a NaN/Inf anywhere makes the kernel's sum non-finite
        finite = np.logical_and.reduce([np.isfinite(b).all(axis=1) for b in blocks])
        batch, blocks, bad = batch.filter(pa.array(finite)), [b[finite] for b in blocks], bad + int((~finite).sum())
        out = kernel(blocks)
    return batch, blocks, out, bad


def _ipc_bytes(table: pa.Table | None) -> bytes | None:
    if table is None:
        return None
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(data: bytes | None) -> pa.Table | None:
    return None if data is None else pa.ipc.open_stream(data).read_all()


def gram(df: DataFrame, col_name: str, dim: int, source: FileSource | None = None) -> Gram:
    """X^T X of the vector column (one BLAS syrk per Arrow batch, float64).

    Parameters
    ----------
    df : DataFrame with column col_name array<float> of length dim
        Invalid vectors (null, wrong length, NaN/Inf) are counted in ``n_invalid``, not summed.
    col_name : str
    dim : int
    source : FileSource, optional
        The same rows read by the tasks with pyarrow (see ``scan_rows``).

    Returns
    -------
    Gram
    """
    scan = scan_rows(df, [col_name], dim, dim * dim, lambda b: (b[0].T @ b[0]).ravel(), source=source)
    return Gram(scan.sums.reshape(dim, dim), scan.n_rows, scan.n_invalid, dim)


def cross_gram(df: DataFrame, col_a: str, col_b: str, dim: int,
               transform_a: np.ndarray | None = None, top: TopRowsRequest | None = None) -> CrossGram:
    """A^T B and the squared norms of A and B over joined rows, A = col_a @ transform_a.

    Per batch: X^T Y, X^T X and sum(Y^2) of the raw columns X, Y. The transform M is applied
    to the e x e sums on the driver (A^T B = M^T X^T Y, ||A||^2 = tr(M^T X^T X M)), so no
    row is multiplied by it.

    Parameters
    ----------
    df : DataFrame with columns col_a and col_b array<float> of length dim
        E.g. two versions joined on id. A row with an invalid vector in either column is
        counted in ``n_invalid``, not summed.
    col_a, col_b : str
    dim : int
    transform_a : ndarray, shape (dim, dim), optional
        M; the identity when None.
    top : TopRowsRequest, optional
        Also pick these rows (columns id, key, col_a, col_b) in the same pass (``scan_rows``).

    Returns
    -------
    CrossGram
    """
    e2 = dim * dim

    def kernel(blocks):
        x, y = blocks
        return np.concatenate([(x.T @ y).ravel(), (x.T @ x).ravel(), [np.einsum("ij,ij->", y, y)]])

    scan = scan_rows(df, [col_a, col_b], dim, 2 * e2 + 1, kernel, top)
    flat = scan.sums
    xy, xx = flat[:e2].reshape(dim, dim), flat[e2:2 * e2].reshape(dim, dim)
    m = np.eye(dim) if transform_a is None else np.asarray(transform_a, dtype=np.float64)
    return CrossGram(m.T @ xy, float(np.einsum("ij,ij->", m, xx @ m)), float(flat[-1]),
                     scan.n_rows, scan.n_invalid, scan.top)


def apply_transform(df: DataFrame, col_name: str, matrix: np.ndarray) -> DataFrame:
    """Replace vector column ``col_name`` by (vector @ matrix) as float32, other columns kept.

    Parameters
    ----------
    df : DataFrame with column col_name array<float> of length e
        Vectors must already be valid (checked by the Gram pass); NaN/Inf are not checked.
    col_name : str
    matrix : ndarray, shape (e, f)

    Returns
    -------
    DataFrame
        The schema of ``df``; ``col_name`` holds vectors of length f. Lazy.

    Raises
    ------
    ValueError
        In the Spark task, when an action computes it: a vector is null or not of length e.
    """
    fn = transform_batches(matrix, col_name)
    return df.mapInArrow(lambda batches: map(fn, batches), df.schema)


def transform_batches(matrix: np.ndarray, col_name: str, keep_col: str | None = None,
                      parent_col: str | None = None, smoothing: float = 1.0):
    """A function of one Arrow record batch: ``col_name`` replaced by (vector @ matrix) as
    float32, except in the rows where boolean column ``keep_col`` is true (kept as they are).

    With ``parent_col`` (a vector column, null where the parent has no such id): where it is
    not null the result is ``smoothing * (vector @ matrix) + (1 - smoothing) * parent``
    (temporal smoothing, docs/stabilization.md), and the column is dropped from the output.

    For a writer that transforms as it writes (``tables.write_partition``'s ``batch_fn``),
    and for ``apply_transform``. A binary ``col_name`` (``vector_codec.encode_vectors``) comes
    out as a list of float. Picklable; it raises ValueError on a null vector or one not of
    length e.
    """
    m = np.asarray(matrix, dtype=np.float64)
    return functools.partial(_transform_batch, m, col_name, keep_col, parent_col, float(smoothing))


def _transform_batch(m: np.ndarray, col_name: str, keep_col: str | None, parent_col: str | None,
                     smoothing: float, batch: pa.RecordBatch) -> pa.RecordBatch:
    idx = batch.schema.get_field_index(col_name)
    field = batch.schema.field(idx)
    if pa.types.is_binary(field.type):  # binary blocks in (encode_vectors): a list of float out
        field = pa.field(col_name, pa.list_(pa.float32()))
    y = checked_matrix(batch, col_name, m.shape[0]).astype(np.float64)
    todo = np.ones(batch.num_rows, dtype=bool)
    if keep_col is None:
        y = y @ m  # (e, f) matrices too
    else:
        todo = ~batch.column(keep_col).fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
        y[todo] = y[todo] @ m
    if parent_col is not None:
        y = _smoothed(y, batch.column(parent_col), todo, m.shape[1], smoothing)
        batch = batch.drop_columns([parent_col])
        idx = batch.schema.get_field_index(col_name)
    return batch.set_column(idx, field, list_column(y, field.type))


def _smoothed(y: np.ndarray, parent: pa.Array, todo: np.ndarray, dim: int, smoothing: float) -> np.ndarray:
    """Rows ``todo`` of y that have a parent vector: smoothing * y + (1 - smoothing) * parent."""
    if isinstance(parent, pa.ChunkedArray):
        parent = pa.concat_arrays(parent.chunks)
    has = todo & ~parent.is_null().to_numpy(zero_copy_only=False)
    if has.any():
        b = batch_matrix(parent.filter(pa.array(has)), dim)
        if b is None:
            raise ValueError(f"a parent vector is not of length {dim} or has a null element")
        y[has] = smoothed(y[has], b.astype(np.float64), smoothing)
    return y


def row_cosines(df: DataFrame, col_a: str, col_b: str, dim: int,
                transforms_a: dict[str, np.ndarray | None], keep: Sequence[str] = ()) -> DataFrame:
    """Columns ``keep`` plus one double column per name in ``transforms_a``: cos(col_a @ M, col_b).

    Parameters
    ----------
    df : DataFrame with columns col_a and col_b array<float> of length dim, and ``keep``
        Vectors must be valid (rows of an inner join of checked tables).
    col_a, col_b : str
    dim : int
    transforms_a : dict of str to (ndarray, shape (dim, dim), or None)
        Output column name -> M (None: the identity).
    keep : sequence of str
        Columns of ``df`` passed through, types kept.

    Returns
    -------
    DataFrame
        Columns ``keep``, then one double per key of ``transforms_a`` (0 where either
        vector is zero). Lazy.

    Raises
    ------
    ValueError
        In the Spark task, when an action computes it: a vector is null or not of length dim.
    """
    mats = {k: None if m is None else np.asarray(m, dtype=np.float64) for k, m in transforms_a.items()}
    keep = list(keep)

    def cosines(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            a = checked_matrix(batch, col_a, dim).astype(np.float64)
            b = checked_matrix(batch, col_b, dim).astype(np.float64)
            b_norm = np.linalg.norm(b, axis=1)
            out = [pa.array(paired_cosines(a if m is None else a @ m, b, b_norm)) for m in mats.values()]
            yield pa.record_batch([batch.column(c) for c in keep] + out, names=keep + list(mats))

    kept = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in df.select(*keep).schema.fields)
    schema = ", ".join(([kept] if kept else []) + [f"{k} double" for k in mats])
    return df.select(*dict.fromkeys([*keep, col_a, col_b])).mapInArrow(cosines, schema)




def release(cached: list) -> None:
    """Unpersist the DataFrames and destroy the broadcasts in ``cached``."""
    for x in cached:
        x.destroy() if isinstance(x, Broadcast) else x.unpersist()
