"""Vector tables as Parquet files that the Spark tasks read with pyarrow (``arrow_io``).

A pass over a ``FileSource`` skips Spark's Parquet reader and its row-to-Arrow conversion of
the vectors (most of a pass's time); ``FileSource.binary_vectors`` and ``binary_frame`` hand
each vector to Spark as one binary block (``vector_codec.encode_vectors``), so a shuffle, a
cache or a write moves blocks instead of array<float> elements. See docs/stabilization.md
("Where the time goes").
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame
from pyspark.sql.types import BinaryType, StructField, StructType

from embedlib import arrow_io
from embedlib.log import get_logger
from embedlib.vector_codec import encode_vectors

log = get_logger(__name__)


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
                log.info("%s: pyarrow cannot list Parquet files there; Spark's reader reads it", location)
                return None
            fs, path = arrow_io.filesystem(found[0].path)
            schema = pq.read_schema(path, filesystem=fs)
        except (OSError, ValueError, pa.ArrowException) as exc:
            # Not silent: a permissions or namenode error would otherwise just switch readers.
            log.warning("%s: pyarrow cannot read it (%s: %s); Spark's reader reads it",
                        location, type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
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
