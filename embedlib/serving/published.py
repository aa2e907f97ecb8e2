"""Where a published embedding version lives: the registered data of one dt and side."""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from embedlib import locations, registry, tables
from embedlib.config import Config
from embedlib.serving.vectors import ID_COL, VECTOR_COL


def published_vectors(spark: SparkSession, cfg: Config, dt: str) -> DataFrame:
    """(id, vector) of version dt, side ``serve.side``: the data its registry row points at.

    A version exists only once its registry row is committed; serving reads nothing else.
    ``serve.require_registered: false`` reads the table's partition dt instead (hand-made
    partitions, tests).
    """
    side = cfg.serve.side
    if not cfg.serve.require_registered:
        df = tables.read_partition(spark, tables.embeddings_table(cfg.tables, side), dt)
    elif dt not in registry.registered_dts(spark, cfg):
        raise registry.RegistryError(
            f"version {dt} is not registered in {tables.table_name(cfg.tables, 'versions')}; only registered "
            "versions are served (serve.require_registered=false to serve the table anyway)")
    else:
        df = registry.read_published(spark, cfg, dt, side)[0]
    return df.select(ID_COL, VECTOR_COL)


def partition_files(spark: SparkSession, cfg: Config, dt: str) -> list[str]:
    """The Parquet files (locations, ``embedlib/locations.py``) of version dt of ``serve.side``.

    Spark is needed only to ask the metastore; the index then reads the files with pyarrow.
    """
    return sorted(locations.from_uri(uri) for uri in published_vectors(spark, cfg, dt).inputFiles())
