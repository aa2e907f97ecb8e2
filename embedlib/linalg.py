"""The one linear-algebra module: n x e passes on Spark, e x e maths on the driver.

Distributed side: every pass over an (id, vector array<float>) DataFrame runs on Arrow record
batches (``mapInArrow``). The list column's values buffer is flattened and reshaped to an
n x e matrix, so each batch costs one BLAS call instead of n Python-level row operations;
per-partition results (e x e) are combined with a tree reduction (summed on the driver
when there are only a few).

Driver side (small e x e matrices, float64): the Cholesky factor of a Gram matrix as the R of
a QR that is never computed, with an eigen-decomposition fallback for (near) singular
Grams; the low-rank SVD of S = T W^T from the two R factors; the Procrustes rotation.
See ../shared/design/STABILIZATION.md for the derivations.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.linalg
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, StructField, StructType

from embedlib import arrow_io
from embedlib.errors import EmbedlibError


class LinalgError(EmbedlibError):
    """The vectors cannot give a meaningful result (rank, NaN, shapes); the message says why."""


# ----------------------------------------------------------------------------- Arrow kernels
def batch_matrix(arr: pa.Array, dim: int) -> np.ndarray | None:
    """The list<float> column ``arr`` as an (n, dim) float32 matrix, or None if any row is bad.

    Parameters
    ----------
    arr : pyarrow Array or ChunkedArray, length n
        list, large_list or fixed_size_list of float; or binary: each value the dim float32
        of one vector, native byte order (``FileSource.binary_vectors``).
    dim : int

    Returns
    -------
    ndarray, shape (n, dim), float32, or None
        None when a vector is null, of a length other than ``dim``, or has a null element.
        NaN/Inf are not checked here (``invalid_vector``, ``row_sums`` do). For float32
        values the matrix is a read-only view of the Arrow buffer.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = pa.concat_arrays(arr.chunks)
    if arr.null_count:
        return None
    if pa.types.is_binary(arr.type):
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset:arr.offset + len(arr) + 1]
        if len(arr) and not np.all(np.diff(offsets) == 4 * dim):
            return None
        if not len(arr):
            return np.zeros((0, dim), dtype=np.float32)
        raw = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
        return raw.view(np.float32).reshape(len(arr), dim)
    if pa.types.is_fixed_size_list(arr.type):
        if arr.type.list_size != dim:
            return None
    elif len(arr) and not np.all(np.diff(arr.offsets.to_numpy()) == dim):
        return None
    values = arr.flatten()
    if values.null_count:
        return None
    return values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(arr), dim)


def list_column(matrix: np.ndarray, like: pa.DataType) -> pa.Array:
    """An (n, e) matrix as a list column of Arrow type ``like`` (float32 values).

    Parameters
    ----------
    matrix : ndarray, shape (n, e)
        Cast to float32.
    like : pyarrow DataType
        A list type of float32 values, e.g. the type of the column being replaced.

    Returns
    -------
    pyarrow ListArray, length n
    """
    n, e = matrix.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * e)
    values = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).ravel())
    return pa.ListArray.from_arrays(offsets, values, type=like)


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


# ------------------------------------------------------------------- distributed e x e passes
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


@dataclass(frozen=True)
class FileSource:
    """The rows of a frame as Parquet files that the tasks read with pyarrow (``arrow_io``).

    A pass over a FileSource skips Spark's Parquet reader and its row-to-Arrow conversion
    of the vectors (most of a pass's time); the frame it stands for has the same rows.

    Attributes
    ----------
    splits : tuple of arrow_io.Split
    columns : dict of str to str
        The frame's column name -> the file's column name.
    """

    splits: tuple
    columns: dict

    @classmethod
    def of(cls, location: str, columns: dict, optional: Sequence[str] = ()) -> FileSource | None:
        """The source of the Parquet data at ``location``, or None where a pass must use the
        frame: pyarrow cannot open the location, or its first file lacks a column (those
        named in ``optional`` are left out instead), or a column has another type than
        ``id``: string or integer, ``count``: integer, the others: a list of float or double."""
        try:
            found = arrow_io.splits(location)
            if not found:
                return None
            fs, path = arrow_io.filesystem(found[0].path)
            schema = pq.read_schema(path, filesystem=fs)
        except (OSError, ValueError, pa.ArrowException):
            return None
        columns = {name: column for name, column in columns.items()
                   if name not in optional or schema.get_field_index(column) >= 0}
        for name, column in columns.items():
            if schema.get_field_index(column) < 0:
                return None
            kind = schema.field(column).type
            listed = pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
            if name == "id":  # cast to string by pyarrow as Spark would: strings and integers only
                ok = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)
            elif name == "count":
                ok = pa.types.is_integer(kind)
            else:
                ok = listed and pa.types.is_floating(kind.value_type)
            if not ok:
                return None
        return cls(tuple(found), dict(columns))

    def binary_vectors(self, spark, dim: int, vector_name: str) -> DataFrame:
        """A frame of the files' rows: id string, ``vector_name`` binary (the vector's dim
        float32, null where it is null, not of length dim or has a null element), and count
        long when the source maps one.

        Spark moves (shuffles, caches) a binary value as one block, where an array<float>
        is converted element by element between the JVM and Python.
        """
        names = ["id", "vector"] + (["count"] if "count" in self.columns else [])
        fields = [pa.field("id", pa.string()), pa.field(vector_name, pa.binary())]
        fields += [pa.field("count", pa.int64())] if "count" in self.columns else []
        schema = pa.schema(fields)

        def encode(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                encoded = encode_vectors(batch, "vector", dim)
                out = [pc.cast(batch.column("id"), pa.string()), encoded]
                out += [pc.cast(batch.column("count"), pa.int64())] if "count" in self.columns else []
                yield pa.RecordBatch.from_arrays(out, schema=schema)

        ddl = f"id string, `{vector_name}` binary" + (", count long" if "count" in self.columns else "")
        return self.map_batches(spark, encode, names, ddl)

    def batches(self, index_batches: Iterator[pa.RecordBatch], cols: Sequence[str]) -> Iterator[pa.RecordBatch]:
        """The record batches of the splits whose indexes arrive in ``index_batches`` (the
        one column of ``spark.range``), columns ``cols`` named as in the frame."""
        cols = list(cols)
        for index_batch in index_batches:
            for i in index_batch.column(0).to_pylist():
                for batch in arrow_io.read_split(self.splits[i], [self.columns[c] for c in cols]):
                    yield pa.RecordBatch.from_arrays(batch.columns, names=cols)

    def map_batches(self, spark, fn, cols: Sequence[str], schema: str) -> DataFrame:
        """``fn`` over the batches of every split, one Spark task per split, as ``mapInArrow``."""
        tasks = spark.range(len(self.splits), numPartitions=max(1, len(self.splits)))
        return tasks.mapInArrow(lambda index_batches: fn(self.batches(index_batches, cols)), schema)


def encode_vectors(batch: pa.RecordBatch, col_name: str, dim: int) -> pa.Array:
    """Column ``col_name`` of ``batch`` (list of float) as binary: each vector's dim float32
    in one value, null where the vector is null, not of length dim or has a null element."""
    vec = batch.column(col_name)
    x, keep = batch_matrix(vec, dim), None
    if x is None:  # rare: bad rows become nulls, counted as invalid by the passes
        keep = _valid_rows(batch, [col_name], dim)
        x = np.zeros((batch.num_rows, dim), dtype=np.float32)
        x[keep] = batch_matrix(vec.filter(pa.array(keep)), dim)
    x = np.ascontiguousarray(x, dtype=np.float32)
    offsets = pa.py_buffer((np.arange(batch.num_rows + 1, dtype=np.int32) * 4 * dim).tobytes())
    encoded = pa.Array.from_buffers(pa.binary(), batch.num_rows, [None, offsets, pa.py_buffer(x)])
    if keep is not None:
        encoded = pc.if_else(pa.array(keep), encoded, pa.nulls(batch.num_rows, pa.binary()))
    return encoded


def binary_frame(df: DataFrame, col_name: str, dim: int) -> DataFrame:
    """``df`` with vector column ``col_name`` (array<float>) as binary (``encode_vectors``)."""
    schema = StructType([StructField(f.name, BinaryType()) if f.name == col_name else f for f in df.schema.fields])
    idx = df.columns.index(col_name)

    def encode(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            columns = list(batch.columns)
            columns[idx] = encode_vectors(batch, col_name, dim)
            yield pa.RecordBatch.from_arrays(columns, names=batch.schema.names)

    return df.mapInArrow(encode, schema)


@dataclass
class TopRows:
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


def top_rows(table: pa.Table, top: TopRows) -> pa.Table:
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


def row_sums(df: DataFrame, cols: Sequence[str], dim: int, size: int, kernel,
             top: TopRows | None = None,
             source: FileSource | None = None) -> tuple[np.ndarray, int, int, pa.Table | None]:
    """(sum of ``kernel`` over the valid rows of ``df``, valid rows, invalid rows, top rows).

    A row is invalid when a vector in ``cols`` is null, not of length ``dim``, has a null
    element, or has a NaN/Inf.

    Parameters
    ----------
    df : DataFrame with columns ``cols``, each array<float> of length dim
    cols : sequence of str
    dim : int
    size : int
        Length of the kernel's output.
    kernel : callable
        ``kernel(blocks)`` maps the float64 (m, dim) matrices of ``cols`` for one Arrow batch
        (a list, in the order of ``cols``) to a flat float64 array of shape (size,): a sum over
        the rows that is non-finite when a row has a NaN/Inf (true of any sum of squares), so
        rows are scanned for them only then. It runs on the executors (picklable).
    top : TopRows, optional
        Also keep, in the same pass, the valid rows with the largest key (what
        ``df.orderBy(key desc, id).limit(n)`` would give), with columns id, key and ``cols``.
    source : FileSource, optional
        The same rows as ``df``, read by the tasks with pyarrow instead of through Spark.

    Returns
    -------
    sums : ndarray, shape (size,), float64
        Zeros when ``df`` has no partition.
    n_rows, n_invalid : int
    top_table : pyarrow Table or None
        The top rows, best first; None without ``top``.
    """
    cols = list(cols)
    picked = [top.id_col, top.key_col] if top else []

    def partial(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        acc, n, n_bad, best = np.zeros(size), 0, 0, None
        for batch in batches:
            blocks = [batch_matrix(batch.column(c), dim) for c in cols]
            if any(b is None for b in blocks):  # rare: filter row by row only then
                keep = _valid_rows(batch, cols, dim)
                n_bad += batch.num_rows - int(keep.sum())
                batch = batch.filter(pa.array(keep))
                blocks = [batch_matrix(batch.column(c), dim) for c in cols]
            blocks = [b.astype(np.float64) for b in blocks]
            out = kernel(blocks)
            if not np.isfinite(out).all():
                finite = np.logical_and.reduce([np.isfinite(b).all(axis=1) for b in blocks])
                n_bad += int((~finite).sum())
                blocks = [b[finite] for b in blocks]
                batch = batch.filter(pa.array(finite))
                out = kernel(blocks)
            acc += out
            n += blocks[0].shape[0]
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
        return np.zeros(size), 0, 0, None
    n, n_bad, flat, best = merged
    return flat.copy(), n, n_bad, best


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
        The same rows read by the tasks with pyarrow (see ``row_sums``).

    Returns
    -------
    Gram
    """
    flat, n, n_bad, _ = row_sums(df, [col_name], dim, dim * dim, lambda b: (b[0].T @ b[0]).ravel(), source=source)
    return Gram(flat.reshape(dim, dim), n, n_bad, dim)


def cross_gram(df: DataFrame, col_a: str, col_b: str, dim: int,
               transform_a: np.ndarray | None = None, top: TopRows | None = None) -> CrossGram:
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
    top : TopRows, optional
        Also pick these rows (columns id, key, col_a, col_b) in the same pass (``row_sums``).

    Returns
    -------
    CrossGram
    """
    e2 = dim * dim

    def kernel(blocks):
        x, y = blocks
        return np.concatenate([(x.T @ y).ravel(), (x.T @ x).ravel(), [np.einsum("ij,ij->", y, y)]])

    flat, n, n_bad, best = row_sums(df, [col_a, col_b], dim, 2 * e2 + 1, kernel, top)
    xy, xx = flat[:e2].reshape(dim, dim), flat[e2:2 * e2].reshape(dim, dim)
    m = np.eye(dim) if transform_a is None else np.asarray(transform_a, dtype=np.float64)
    return CrossGram(m.T @ xy, float(np.einsum("ij,ij->", m, xx @ m)), float(flat[-1]), n, n_bad, best)


def _valid_rows(batch: pa.RecordBatch, cols: Sequence[str], dim: int) -> np.ndarray:
    keep = np.ones(batch.num_rows, dtype=bool)
    for c in cols:
        arr = batch.column(c)
        keep &= ~arr.is_null().to_numpy(zero_copy_only=False)
        if pa.types.is_binary(arr.type):  # null elements cannot be encoded: nulls and lengths only
            keep &= pc.binary_length(arr).fill_null(-1).to_numpy() == 4 * dim
            continue
        lengths = arr.value_lengths().fill_null(-1).to_numpy()
        keep &= lengths == dim
        for i in np.flatnonzero(keep):
            if arr[i].values.null_count:
                keep[i] = False
    return keep


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


def transform_batches(matrix: np.ndarray, col_name: str, keep_col: str | None = None):
    """A function of one Arrow record batch: ``col_name`` replaced by (vector @ matrix) as
    float32, except in the rows where boolean column ``keep_col`` is true (kept as they are).

    For a writer that transforms as it writes (``tables.write_partition``'s ``batch_fn``),
    and for ``apply_transform``. A binary ``col_name`` (``encode_vectors``) comes out as a
    list of float. Picklable; it raises ValueError on a null vector or one not of length e.
    """
    m = np.asarray(matrix, dtype=np.float64)
    return functools.partial(_transform_batch, m, col_name, keep_col)


def _transform_batch(m: np.ndarray, col_name: str, keep_col: str | None, batch: pa.RecordBatch) -> pa.RecordBatch:
    idx = batch.schema.get_field_index(col_name)
    field = batch.schema.field(idx)
    if pa.types.is_binary(field.type):  # binary blocks in (encode_vectors): a list of float out
        field = pa.field(col_name, pa.list_(pa.float32()))
    if keep_col is None:
        y = _checked_matrix(batch, col_name, m.shape[0]).astype(np.float64) @ m
    else:
        todo = ~batch.column(keep_col).fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
        y = _checked_matrix(batch, col_name, m.shape[0]).astype(np.float64)
        y[todo] = y[todo] @ m
    return batch.set_column(idx, field, list_column(y, field.type))


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
            a = _checked_matrix(batch, col_a, dim).astype(np.float64)
            b = _checked_matrix(batch, col_b, dim).astype(np.float64)
            b_norm = np.linalg.norm(b, axis=1)
            out = [pa.array(paired_cosines(a if m is None else a @ m, b, b_norm)) for m in mats.values()]
            yield pa.record_batch([batch.column(c) for c in keep] + out, names=keep + list(mats))

    kept = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in df.select(*keep).schema.fields)
    schema = ", ".join(([kept] if kept else []) + [f"{k} double" for k in mats])
    return df.select(*dict.fromkeys([*keep, col_a, col_b])).mapInArrow(cosines, schema)


def paired_cosines(a: np.ndarray, b: np.ndarray, b_norm: np.ndarray | None = None) -> np.ndarray:
    """Row i: cos(a[i], b[i]), 0 where either row is zero. ``b_norm``: b's row norms, when known."""
    b_norm = np.linalg.norm(b, axis=1) if b_norm is None else b_norm
    denom = np.linalg.norm(a, axis=1) * b_norm
    return np.divide(np.einsum("ij,ij->i", a, b), denom, out=np.zeros(len(denom)), where=denom > 0)


def _checked_matrix(batch: pa.RecordBatch, col_name: str, dim: int) -> np.ndarray:
    x = batch_matrix(batch.column(col_name), dim)
    if x is None:
        raise ValueError(f"column {col_name} has a vector that is null or not of length {dim}")
    return x


# ------------------------------------------------------------------------ driver-side maths
@dataclass
class Factor:
    """R with R^T R ~= G: (rank, e); the Cholesky factor when G is well conditioned.

    Attributes
    ----------
    r : ndarray, shape (rank, e), float64
        Upper triangular for "cholesky"; for "eigh", rows by decreasing eigenvalue.
    rank : int
    method : {"cholesky", "eigh"}
    condition : float
        Largest / smallest eigenvalue of G; inf when G is singular.
    """

    r: np.ndarray
    rank: int
    method: str  # "cholesky" or "eigh"
    condition: float  # eigenvalue ratio of G (inf when singular)


def cholesky_factor(gram_matrix: np.ndarray, rcond: float = 1e-10, on_deficient: str = "eigh",
                    name: str = "matrix") -> Factor:
    """A square root R of the Gram matrix G (R^T R = G), the R of a QR never computed.

    Cholesky when the smallest eigenvalue of G is above ``rcond`` times the largest;
    otherwise ``on_deficient='eigh'`` returns diag(sqrt(w_r)) V_r^T over the r eigenvalues
    above that threshold (shape (r, e)), and ``'error'`` raises LinalgError.

    Parameters
    ----------
    gram_matrix : ndarray, shape (e, e)
        Symmetric positive semi-definite; symmetrized and used as float64.
    rcond : float
    on_deficient : {"eigh", "error"}
    name : str
        What G is the Gram matrix of, for error messages.

    Returns
    -------
    Factor

    Raises
    ------
    LinalgError
        G has NaN/Inf entries, is zero, or is rank deficient with ``on_deficient='error'``.
    """
    g = (np.asarray(gram_matrix, dtype=np.float64) + np.asarray(gram_matrix, dtype=np.float64).T) / 2
    if not np.all(np.isfinite(g)):
        raise LinalgError(f"the Gram matrix of {name} has NaN or Inf entries")
    w, v = np.linalg.eigh(g)
    top = w[-1] if w.size else 0.0
    if top <= 0:
        raise LinalgError(f"{name} has no nonzero vector (its Gram matrix is zero)")
    condition = float(top / w[0]) if w[0] > 0 else float("inf")
    if w[0] > rcond * top:
        try:
            return Factor(scipy.linalg.cholesky(g, lower=False), g.shape[0], "cholesky", condition)
        except np.linalg.LinAlgError:
            pass
    keep = w > rcond * top
    rank = int(keep.sum())
    if on_deficient == "error":
        raise LinalgError(
            f"{name} is rank deficient: numerical rank {rank} of {g.shape[0]} "
            f"(Gram eigenvalue ratio {condition:.3g}, threshold 1/rcond = {1 / rcond:.3g}); "
            "set stabilize.on_rank_deficient=eigh to continue with the reduced rank")
    r = np.sqrt(w[keep])[:, None] * v[:, keep].T
    return Factor(r[::-1].copy(), rank, "eigh", condition)


@dataclass
class CanonicalTransforms:
    """T' = T m_t, W' = W m_w with T' W'^T = T W^T and T'^T T' = W'^T W' = diag(sigma).

    Attributes
    ----------
    m_t, m_w : ndarray, shape (e, e), float64
        Columns past ``rank`` are zero.
    singular_values : ndarray, shape (rank,), float64
        sigma, descending.
    rank : int
    """

    m_t: np.ndarray  # (e, e)
    m_w: np.ndarray  # (e, e)
    singular_values: np.ndarray  # (rank,)
    rank: int


def low_rank_svd_transforms(r_t: np.ndarray, r_w: np.ndarray, rtol: float = 1e-12) -> CanonicalTransforms:
    """The e x e maps to the canonical pair of S = T W^T, from R_T (r_t x e) and R_W (r_w x e).

    With R_T R_W^T = U S V^T: M_T = R_W^T V S^-1/2 and M_W = R_T^T U S^-1/2 (no inverse of R).
    Singular values at or below ``rtol`` times the largest are a rank loss: those columns are
    zero (the canonical vectors have ``rank`` meaningful dimensions).

    Parameters
    ----------
    r_t : ndarray, shape (p, e), float64
        R_T with R_T^T R_T = T^T T (``Factor.r``).
    r_w : ndarray, shape (q, e), float64
        R_W with R_W^T R_W = W^T W.
    rtol : float

    Returns
    -------
    CanonicalTransforms

    Raises
    ------
    LinalgError
        T W^T is zero.
    """
    e = r_t.shape[1]
    u, s, vt = np.linalg.svd(r_t @ r_w.T, full_matrices=False)
    keep = s > rtol * (s[0] if s.size else 0.0)
    rank = int(keep.sum())
    if rank == 0:
        raise LinalgError("the score matrix T W^T is zero: nothing to canonicalize")
    inv_sqrt = 1.0 / np.sqrt(s[keep])
    m_t, m_w = np.zeros((e, e)), np.zeros((e, e))
    m_t[:, :rank] = r_w.T @ vt[keep].T * inv_sqrt
    m_w[:, :rank] = r_t.T @ u[:, keep] * inv_sqrt
    return CanonicalTransforms(m_t, m_w, s[keep], rank)


def canonical_pair_transforms(t: np.ndarray, w: np.ndarray, rcond: float = 1e-10,
                              names: tuple[str, str] = ("items", "context")) -> CanonicalTransforms:
    """``low_rank_svd_transforms`` for two matrices in memory (rows of T and W, not their Grams).

    For a model held by one process (an ensemble member, a benchmark): the Gram matrices are
    formed here in float64 and factored by ``cholesky_factor`` (eigh past ``rcond``).
    """
    t, w = np.asarray(t, dtype=np.float64), np.asarray(w, dtype=np.float64)
    f_t = cholesky_factor(t.T @ t, rcond, "eigh", names[0])
    f_w = cholesky_factor(w.T @ w, rcond, "eigh", names[1])
    return low_rank_svd_transforms(f_t.r, f_w.r)


def procrustes_rotation(cross: np.ndarray) -> np.ndarray:
    """The orthogonal O minimizing ||A O - B||_F, from the cross-Gram A^T B: O = U V^T.

    Parameters
    ----------
    cross : ndarray, shape (e, e)
        A^T B (``CrossGram.cross``).

    Returns
    -------
    ndarray, shape (e, e), float64

    Raises
    ------
    LinalgError
        ``cross`` has NaN/Inf entries.
    """
    if not np.all(np.isfinite(cross)):
        raise LinalgError("the cross-Gram matrix has NaN or Inf entries")
    u, _, vt = np.linalg.svd(cross)
    return u @ vt


def alignment_residual(sq_norm_a: float, cross: np.ndarray, sq_norm_b: float, o: np.ndarray) -> float:
    """||A O - B||_F / ||B||_F from ||A||^2, A^T B and ||B||^2 (O orthogonal: ||A O|| = ||A||).

    Parameters
    ----------
    sq_norm_a, sq_norm_b : float
        ||A||_F^2 and ||B||_F^2.
    cross : ndarray, shape (e, e)
        A^T B.
    o : ndarray, shape (e, e)
        Orthogonal.

    Returns
    -------
    float
        NaN when ||B|| is 0.
    """
    sq = sq_norm_a - 2 * np.trace(o.T @ cross) + sq_norm_b
    return float(np.sqrt(max(sq, 0.0) / sq_norm_b)) if sq_norm_b > 0 else float("nan")
