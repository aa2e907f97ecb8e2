"""Vector columns of Arrow record batches as numpy matrices, and back: no Spark here.

The one rule for a valid vector, wherever a vector is read (the Gram and cross-Gram passes,
the join's binary blocks, the publication, the service): it is not null, it has exactly
``dim`` elements, none of them null, and all of them finite. ``valid_rows`` applies it to an
Arrow column; ``spark_passes.invalid_vector`` is the same rule as a Spark SQL Column (the
two are tested against each other). ``batch_matrix`` is the fast path: it gives the matrix
when every row has the right shape, and None otherwise, leaving NaN/Inf to the caller.

Two encodings of a vector column are read alike:

- a list (list, large_list or fixed_size_list) of float or double, as Spark and Parquet
  store array<float>;
- binary: each value the ``dim`` float32 of one vector, native byte order
  (``encode_vectors``). Spark moves a binary value as one block, where it converts an
  array<float> element by element between the JVM and Python (see ``vector_files``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def batch_matrix(arr: pa.Array, dim: int) -> np.ndarray | None:
    """The vector column ``arr`` as an (n, dim) float32 matrix, or None if any row is bad.

    Parameters
    ----------
    arr : pyarrow Array or ChunkedArray, length n
        A list of float or double, or binary (``encode_vectors``).
    dim : int

    Returns
    -------
    ndarray, shape (n, dim), float32, or None
        None when a vector is null, of a length other than ``dim``, or has a null element.
        NaN/Inf are not checked here (``valid_rows`` does). For float32 values the matrix
        is a read-only view of the Arrow buffer.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = pa.concat_arrays(arr.chunks)
    if arr.null_count:
        return None
    if pa.types.is_binary(arr.type):
        return _binary_matrix(arr, dim)
    if pa.types.is_fixed_size_list(arr.type):
        if arr.type.list_size != dim:
            return None
    elif len(arr) and not np.all(np.diff(arr.offsets.to_numpy()) == dim):
        return None
    values = arr.flatten()
    if values.null_count:
        return None
    return values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(arr), dim)


def _binary_matrix(arr: pa.Array, dim: int) -> np.ndarray | None:
    """Decode ``encode_vectors``' binary column (no null in it): None when a value is not
    4 * dim bytes long."""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset:arr.offset + len(arr) + 1]
    if len(arr) and not np.all(np.diff(offsets) == 4 * dim):
        return None
    if not len(arr):
        return np.zeros((0, dim), dtype=np.float32)
    raw = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    return raw.view(np.float32).reshape(len(arr), dim)


def valid_rows(batch: pa.RecordBatch, cols: Sequence[str], dim: int) -> np.ndarray:
    """Boolean mask, shape (batch.num_rows,): the rows whose vectors in ``cols`` are all valid
    (not null, ``dim`` elements, no null element, all finite: the module's rule)."""
    keep = np.ones(batch.num_rows, dtype=bool)
    for c in cols:
        arr = batch.column(c)
        if isinstance(arr, pa.ChunkedArray):
            arr = pa.concat_arrays(arr.chunks)
        keep &= ~arr.is_null().to_numpy(zero_copy_only=False)
        if pa.types.is_binary(arr.type):  # nulls stand for the vectors that could not be encoded
            keep &= pc.binary_length(arr).fill_null(-1).to_numpy() == 4 * dim
        else:
            keep &= arr.value_lengths().fill_null(-1).to_numpy() == dim
            values = arr.flatten()
            if values.null_count:  # the rows that hold a null element, without a Python loop
                parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
                keep[parents[values.is_null().to_numpy(zero_copy_only=False)]] = False
        rows = np.flatnonzero(keep)
        if rows.size:
            x = batch_matrix(arr.take(pa.array(rows)), dim)
            keep[rows] = np.isfinite(x).all(axis=1)
    return keep


def checked_matrix(batch: pa.RecordBatch, col_name: str, dim: int) -> np.ndarray:
    """``batch_matrix`` of column ``col_name``, raising ValueError (naming the column) when a
    vector is null or not of length ``dim``: for frames whose vectors were checked before."""
    x = batch_matrix(batch.column(col_name), dim)
    if x is None:
        raise ValueError(f"column {col_name} has a vector that is null or not of length {dim}")
    return x


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


def encode_vectors(batch: pa.RecordBatch, col_name: str, dim: int) -> pa.Array:
    """Column ``col_name`` of ``batch`` (list of float) as binary: each vector's dim float32
    in one value, null where the vector is null, not of length dim or has a null element.

    A batch with such a row is checked row by row (``valid_rows``), and then non-finite
    vectors become nulls too; either way the passes count those rows as invalid.
    """
    vec = batch.column(col_name)
    x, keep = batch_matrix(vec, dim), None
    if x is None:  # rare: bad rows become nulls
        keep = valid_rows(batch, [col_name], dim)
        x = np.zeros((batch.num_rows, dim), dtype=np.float32)
        x[keep] = batch_matrix(vec.filter(pa.array(keep)), dim)
    x = np.ascontiguousarray(x, dtype=np.float32)
    offsets = pa.py_buffer((np.arange(batch.num_rows + 1, dtype=np.int32) * 4 * dim).tobytes())
    encoded = pa.Array.from_buffers(pa.binary(), batch.num_rows, [None, offsets, pa.py_buffer(x)])
    if keep is not None:
        encoded = pc.if_else(pa.array(keep), encoded, pa.nulls(batch.num_rows, pa.binary()))
    return encoded
