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
    check_registered(spark, cfg, dt)
    df = tables.read_partition(spark, embeddings_table(cfg), dt).select(ID_COL, VECTOR_COL)
    return sorted(df.inputFiles())


def check_registered(spark: SparkSession, cfg: Config, dt: str) -> None:
    """Raise RegistryError unless version dt is registered with side ``serve.side``.

    A version exists only once its registry row is committed; serving reads nothing else.
    ``serve.require_registered: false`` turns the check off (hand-made partitions, tests).
    """
    if not cfg.serve.require_registered:
        return
    from embedlib import registry

    if dt not in registry.registered_dts(spark, cfg):
        raise registry.RegistryError(
            f"version {dt} is not registered in {registry.registry_table(cfg)}; only registered "
            "versions are served (serve.require_registered=false to serve the table anyway)")
    sides = registry.read_version(spark, cfg, dt)
    if cfg.serve.side not in sides:
        raise registry.RegistryError(f"version {dt} has no side {cfg.serve.side!r} "
                                     f"(sides: {', '.join(sorted(sides))})")
