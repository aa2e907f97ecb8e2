"""Published vectors from Arrow / Parquet into (ids, matrix) arrays, checked, without Spark.

A published version is a Parquet folder with columns ``id string`` and ``vector
array<float>`` (other columns are ignored). The list column becomes an (n, e) matrix through
``vector_codec.batch_matrix``, the one Arrow list -> matrix converter (no per-row Python).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from embedlib import locations
from embedlib.errors import EmbedlibError
from embedlib.vector_codec import batch_matrix

ID_COL, VECTOR_COL = "id", "vector"


class VectorsError(EmbedlibError):
    """Vectors that cannot be served: missing columns, nulls, ragged, NaN/Inf, duplicates."""


def read_embeddings(path: str | Path | Sequence[str], id_col: str = ID_COL,
                    vector_col: str = VECTOR_COL) -> tuple[np.ndarray, np.ndarray]:
    """Ids and vectors of a Parquet file, a folder of them, or a list of files: local paths or
    locations (``embedlib/locations.py``: not percent-encoded).

    Returns
    -------
    ids : ndarray, shape (n,), object (str)
    vectors : ndarray, shape (n, e), float32
    """
    paths = [str(path)] if isinstance(path, (str, Path)) else [str(p) for p in path]
    if not paths:
        raise VectorsError("no Parquet files to read")
    located = [locations.filesystem(locations.absolute(p)) for p in paths]
    if None in located:
        raise VectorsError(f"pyarrow cannot open {paths[located.index(None)]}")
    filesystem, where = located[0][0], [path for _, path in located]
    if filesystem.get_file_info(where[0]).type == pafs.FileType.NotFound:
        raise VectorsError(f"embeddings path {paths[0]} does not exist")
    if len(where) == 1:
        _check_one_run(where[0], filesystem)
    try:
        table = pq.read_table(where if len(where) > 1 else where[0], filesystem=filesystem)
    except (pa.ArrowInvalid, OSError) as exc:
        raise VectorsError(f"cannot read Parquet at {paths[0]}: {exc}") from None
    return arrays_from_arrow(table, id_col, vector_col)


def _check_one_run(path: str, filesystem: pafs.FileSystem) -> None:
    """A dt folder of a published table may hold several run=<id> folders (the previous run
    is kept for readers in flight, a crashed write leaves its staging run); only the
    metastore knows which one is published, so reading the dt folder is refused then."""
    if filesystem.get_file_info(path).type != pafs.FileType.Directory:
        return
    runs = sorted(info.base_name for info in filesystem.get_file_info(pafs.FileSelector(path))
                  if info.type == pafs.FileType.Directory and info.base_name.startswith("run="))
    if len(runs) > 1:
        raise VectorsError(
            f"{path} holds {len(runs)} run folders ({', '.join(runs)}); the published one is "
            "recorded in the metastore: serve with --conf and --dt (scripts/serve.py), or pass "
            "the run folder itself")


def arrays_from_arrow(table: pa.Table | pa.RecordBatch, id_col: str = ID_COL,
                      vector_col: str = VECTOR_COL) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) from an Arrow table with an id column and a list<float> column.

    Returns
    -------
    ids : ndarray, shape (n,), object (str)
    vectors : ndarray, shape (n, e), float32
    """
    missing = [c for c in (id_col, vector_col) if c not in table.schema.names]
    if missing:
        raise VectorsError(f"embeddings have no column {missing[0]!r} "
                           f"(columns: {', '.join(table.schema.names)})")
    if table.num_rows == 0:
        raise VectorsError("embeddings have no rows")
    ids_arr = _combined(table.column(id_col))
    if ids_arr.null_count:
        raise VectorsError(f"{ids_arr.null_count} embedding rows have a null id")
    ids = ids_arr.cast(pa.string()).to_numpy(zero_copy_only=False)
    lists = _combined(table.column(vector_col))
    if not pa.types.is_list(lists.type) and not pa.types.is_large_list(lists.type) \
            and not pa.types.is_fixed_size_list(lists.type):
        raise VectorsError(f"column {vector_col!r} must be a list of floats, not {lists.type}")
    dim = 0 if lists.is_null()[0].as_py() else len(lists[0])
    vectors = batch_matrix(lists, dim) if dim else None
    if vectors is None:
        raise VectorsError(_why_not_a_matrix(lists, ids, dim))
    return ids, vectors


def _why_not_a_matrix(lists: pa.Array, ids: np.ndarray, dim: int) -> str:
    """Why vector_codec.batch_matrix refused ``lists``: the first bad row, named by its id."""
    if lists.null_count:
        return f"id {ids[_first(lists.is_null())]!r} has a null vector"
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    if dim == 0 or (lengths != dim).any():
        bad = 0 if dim == 0 else int(np.flatnonzero(lengths != dim)[0])
        return (f"vectors must all have the same length > 0: id {ids[bad]!r} has "
                f"{int(lengths[bad])} values, id {ids[0]!r} has {dim}")
    return f"id {ids[_first(lists.flatten().is_null()) // dim]!r} has a null value in its vector"


def check_vectors(ids: np.ndarray, vectors: np.ndarray, what: str = "embeddings") -> None:
    """Raise VectorsError unless ids are unique and ``vectors`` is a finite (n, e) matrix."""
    if vectors.ndim != 2 or vectors.shape[0] != len(ids) or vectors.shape[1] == 0:
        raise VectorsError(f"{what}: vectors must have shape (n ids = {len(ids)}, e > 0), "
                           f"got {vectors.shape}")
    if len(ids) == 0:
        raise VectorsError(f"{what}: no vectors")
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise VectorsError(f"{what}: {bad.size} vectors have NaN or Inf values, "
                           f"e.g. id {ids[bad[0]]!r}")
    dup = pd.Index(ids).duplicated()
    if dup.any():
        names = pd.unique(np.asarray(ids, dtype=object)[dup])
        raise VectorsError(f"{what}: {len(names)} ids appear more than once, "
                           f"e.g. {', '.join(map(repr, names[:5]))}")


def _combined(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _first(mask: pa.Array) -> int:
    return int(np.flatnonzero(mask.to_numpy(zero_copy_only=False))[0])
