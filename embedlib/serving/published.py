"""Where a published embedding version lives: its table and the files of one dt partition."""
from __future__ import annotations

from pyspark.sql import SparkSession

from embedlib import tables
from embedlib.config import Config
from embedlib.serving.vectors import ID_COL, VECTOR_COL


def embeddings_table(cfg: Config, side: str | None = None) -> str:
    """The published embeddings table of ``side`` (default ``serve.side``)."""
    return tables.qualified(cfg.tables, f"{cfg.tables.embeddings_prefix}_{side or cfg.serve.side}")


def partition_files(spark: SparkSession, cfg: Config, dt: str) -> list[str]:
    """The Parquet files (URIs) of partition ``dt`` of the served embeddings table.

    Spark is needed only to ask the metastore; the index then reads the files with pyarrow.
    """
    df = tables.read_partition(spark, embeddings_table(cfg), dt).select(ID_COL, VECTOR_COL)
    return sorted(df.inputFiles())
