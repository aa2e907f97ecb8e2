"""Step 1: behaviour log (input.*) -> tables.sequences and tables.item_stats for dt."""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from embedlib import tables
from embedlib.config import Config
from embedlib.log import get_logger, step
from embedlib.sequences import SequencesResult, build_sequences

log = get_logger(__name__)


def extract(spark: SparkSession, cfg: Config) -> DataFrame:
    return tables.read_input(spark, cfg.input)


def transform(raw_df: DataFrame, cfg: Config, dt: str) -> SequencesResult:
    return build_sequences(raw_df, cfg.input, cfg.sequences, dt)


def load(spark: SparkSession, result: SequencesResult, cfg: Config, dt: str) -> dict:
    """Write item_stats, then sequences; returns where they are."""
    stats_table = tables.table_name(cfg.tables, "item_stats")
    seq_table = tables.table_name(cfg.tables, "sequences")
    tables.write_partition(spark, result.item_stats_df, stats_table, dt)
    tables.write_partition(spark, result.sequences_df, seq_table, dt)
    return {"sequences_table": seq_table, "item_stats_table": stats_table}


def run(spark: SparkSession, cfg: Config, dt: str) -> dict:
    with step(log, f"build_sequences dt={dt}", spark):
        result = transform(extract(spark, cfg), cfg, dt)
        summary = {**result.counts, **load(spark, result, cfg, dt)}
        result.item_stats_df.unpersist()
    return summary
