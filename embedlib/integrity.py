"""Integrity of published versions: a row count and an order-independent fingerprint of the
rows, ids and vector bytes.

The fingerprint of a version is ``"rows64:<S>"``: S is the sum, modulo 2**64, over all rows
of a 64-bit hash of the row, ``mix64(vector_hash ^ crc32(id) * PHI)``, where ``vector_hash``
is the sum of the float32 bit patterns of the vector's values, each times an odd constant of
its position, and ``mix64`` is splitmix64's finaliser (the pairing of an id with its vector
counts: swapped vectors change S). It is cheap (one pass over the id and vector columns,
vectorised per Arrow batch, no sort, no shuffle), the same whatever the row or file order,
and it changes when rows are lost, added or duplicated, an id is altered, or any value of any
vector changes (one changed value always changes S). It is not a cryptographic hash: it
guards against damage, not against someone who forges data. Spark computes it in its tasks
(``mapInArrow``) and a Spark-free reader (the lookup service) in one process, with the same
function (tested).

Versions registered before this fingerprint carry the id-only one, ``"crc32sum:<S>"`` (the
sum of CRC-32 of the ids' UTF-8 bytes, ``F.crc32`` in Spark, ``zlib.crc32`` without); every
reader checks a version with the kind of fingerprint its registry row holds.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from embedlib.errors import EmbedlibError

PREFIX = "crc32sum:"  # ids only (versions registered before ROWS_PREFIX)
ROWS_PREFIX = "rows64:"  # ids and vector bytes
_PHI = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


class IntegrityError(EmbedlibError):
    """Published data does not match what its registry row recorded (lost or altered rows)."""


def fingerprint_sum(id_col: str = "id") -> Column:
    """Spark aggregate: the sum of CRC-32 of the ids' UTF-8 bytes (format with ``as_text``)."""
    return F.sum(F.crc32(F.col(id_col).cast("binary")))


def as_text(crc_sum: int | None) -> str:
    return f"{PREFIX}{int(crc_sum or 0)}"


def ids_fingerprint(ids: Iterable[str]) -> str:
    """The id-only fingerprint of ``ids`` (Python strings), without Spark."""
    return as_text(sum(zlib.crc32(i.encode("utf-8")) for i in ids))


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _weights(e: int) -> np.ndarray:
    """The odd constant of each vector position 0 .. e-1, uint64."""
    return _mix64(np.arange(e, dtype=np.uint64) + _PHI) | np.uint64(1)


def _vector_hashes(vectors: pa.Array, chunk_rows: int = 8192) -> np.ndarray:
    """Per row: the sum (mod 2**64) of its values' float32 bits times their position's weight."""
    lengths = pc.fill_null(pc.list_value_length(vectors), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    bits = np.ascontiguousarray(pc.cast(vectors.flatten(), pa.float32()).to_numpy(zero_copy_only=False),
                                dtype=np.float32).view(np.uint32)
    n, e = len(lengths), int(lengths.max(initial=0))
    weights = _weights(e)
    if n and (lengths == e).all():  # every vector of one length: as a matrix, by blocks of rows
        matrix = bits.reshape(n, e)
        return np.concatenate([(matrix[i:i + chunk_rows].astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
                               for i in range(0, n, chunk_rows)])
    ends = np.cumsum(lengths)
    position = np.arange(len(bits)) - np.repeat(ends - lengths, lengths)
    running = np.concatenate([np.zeros(1, np.uint64),
                              np.cumsum(bits.astype(np.uint64) * weights[position], dtype=np.uint64)])
    return running[ends] - running[ends - lengths]


def rows_sum(ids: pa.Array, vectors: pa.Array) -> int:
    """The fingerprint sum (0 <= S < 2**64) of one batch: ``ids`` a string array, ``vectors``
    a list array of floats (any list type; a null vector hashes as an empty one)."""
    crc = np.fromiter((zlib.crc32(i.encode("utf-8")) if i is not None else 0 for i in ids.to_pylist()),
                      dtype=np.uint64, count=len(ids))
    return _crc_rows_sum(crc, vectors)


def _crc_rows_sum(crc: np.ndarray, vectors: pa.Array) -> int:
    """``rows_sum`` from the ids' CRC-32 (uint64, 0 for a null id)."""
    return int(_mix64(_vector_hashes(vectors) ^ (crc * _PHI)).sum(dtype=np.uint64))


def rows_fingerprint(ids, vectors) -> str:
    """The fingerprint of (ids, vectors) without Spark: ``ids`` strings, ``vectors`` an (n, e)
    float32 matrix or an Arrow list array."""
    if not isinstance(vectors, (pa.Array, pa.ChunkedArray)):
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), matrix.shape[1])
    if isinstance(vectors, pa.ChunkedArray):
        vectors = vectors.combine_chunks()
    return f"{ROWS_PREFIX}{rows_sum(pa.array(ids, pa.string()), vectors)}"


def fingerprint_like(expected: str | None, ids, vectors) -> str:
    """The fingerprint of (ids, vectors) of the kind of ``expected`` (id-only for versions
    registered before vector fingerprints)."""
    if expected is not None and expected.startswith(PREFIX):
        return ids_fingerprint(ids)
    return rows_fingerprint(ids, vectors)


def _sum_task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """One task of ``counts``: its rows, fingerprint sum (as a signed 64-bit value) and the sum
    of the optional third column. Column 0 is the ids' CRC-32, computed by Spark (``F.crc32``
    is zlib's CRC-32 of the UTF-8 bytes), so no id is hashed in Python."""
    n, total, extra = 0, 0, 0
    for batch in batches:
        n += batch.num_rows
        crc = pc.fill_null(batch.column(0), 0).to_numpy(zero_copy_only=False).astype(np.uint64)
        total = (total + _crc_rows_sum(crc, batch.column(1))) % 2**64
        if batch.num_columns > 2:
            extra += pc.sum(pc.cast(batch.column(2), pa.int64())).as_py() or 0
    signed = total - 2**64 if total >= 2**63 else total
    yield pa.RecordBatch.from_arrays([pa.array([n], pa.int64()), pa.array([signed], pa.int64()),
                                      pa.array([extra], pa.int64())], names=["n", "s", "c"])


def counts(df: DataFrame, id_col: str = "id", vector_col: str = "vector",
           like: str | None = None) -> tuple[int, str]:
    """(rows, fingerprint) of ``df``: one job over the id and vector columns, or over the ids
    only when ``like`` (the recorded fingerprint) is an id-only one."""
    if like is not None and like.startswith(PREFIX):
        row = df.agg(F.count(F.lit(1)).alias("n"), fingerprint_sum(id_col).alias("s")).first()
        return int(row.n), as_text(row.s)
    n, fingerprint, _ = counts_and_sum(df, None, id_col, vector_col)
    return n, fingerprint


def counts_and_sum(df: DataFrame, sum_col: str | None, id_col: str = "id",
                   vector_col: str = "vector") -> tuple[int, str, int]:
    """(rows, row fingerprint, sum of the integer or boolean column ``sum_col`` (0 without
    one)) of ``df`` in one job: what the publication records of a written side."""
    cols = [F.crc32(F.col(id_col).cast("binary")), F.col(vector_col)]
    cols += [F.col(sum_col).cast("long")] if sum_col else []
    parts = df.select(*cols).mapInArrow(_sum_task, "n long, s long, c long").collect()
    return sum(p.n for p in parts), f"{ROWS_PREFIX}{sum(p.s for p in parts) % 2**64}", sum(p.c for p in parts)


def verify(df, what: str, expected_rows: int, expected_fingerprint: str | None) -> int:
    """Count and fingerprint ``df`` (the kind ``expected_fingerprint`` is) and ``check`` them;
    the rows read. The IntegrityError carries them too, as ``rows_read``."""
    rows, fingerprint = counts(df, like=expected_fingerprint)
    try:
        check(what, expected_rows, expected_fingerprint, rows, fingerprint)
    except IntegrityError as exc:
        exc.rows_read = rows
        raise
    return rows


def check(what: str, expected_rows: int, expected_fingerprint: str | None,
          rows: int, fingerprint: str) -> None:
    """Raise IntegrityError naming ``what`` and each difference; a None fingerprint (a
    version registered before fingerprints were recorded) checks the row count only."""
    problems = []
    if rows != expected_rows:
        problems.append(f"{rows} rows where the registry recorded {expected_rows}")
    if expected_fingerprint and fingerprint != expected_fingerprint:
        kind = "id" if expected_fingerprint.startswith(PREFIX) else "row (ids and vectors)"
        problems.append(f"{kind} fingerprint {fingerprint} where the registry recorded {expected_fingerprint}")
    if problems:
        raise IntegrityError(f"{what} is damaged: " + "; ".join(problems))
