"""Step summaries per dt in a table (run_stats), so reports can be rebuilt from tables alone."""
from __future__ import annotations

import datetime as _dt
import json

from pyspark.sql import SparkSession

from embedlib import tables
from embedlib.config import Config
from embedlib.registry import json_safe

SCHEMA = "step string, stats_json string, recorded_at timestamp"


def record(spark: SparkSession, cfg: Config, dt: str, step: str, summary: dict) -> None:
    """Replace ``step``'s row in the dt partition, keeping the other steps' rows."""
    rows = {s: (s, j, t) for s, j, t in _rows(spark, cfg, dt)}
    now = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
    rows[step] = (step, json.dumps(json_safe(summary), sort_keys=True, default=str), now)
    df = spark.createDataFrame(list(rows.values()), SCHEMA)
    tables.write_partition(spark, df, tables.table_name(cfg.tables, "run_stats"), dt)


def read(spark: SparkSession, cfg: Config, dt: str) -> dict[str, dict]:
    """{step: summary} recorded for ``dt`` (empty when nothing was recorded)."""
    return {s: json.loads(j) for s, j, _ in _rows(spark, cfg, dt)}


def _rows(spark: SparkSession, cfg: Config, dt: str) -> list[tuple]:
    table = tables.table_name(cfg.tables, "run_stats")
    df = tables.find_partition(spark, table, dt)
    return [] if df is None else [tuple(r) for r in df.collect()]
