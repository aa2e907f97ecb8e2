"""Step 2: tables.sequences[dt] -> raw item (and context) vectors[dt] and train_runs[dt]."""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from embedlib import item2vec, tables
from embedlib.config import Config
from embedlib.item2vec import TrainInputError, TrainResult
from embedlib.log import get_logger, step

log = get_logger(__name__)

SIDES = ("item", "context")
TRAIN_RUNS_SCHEMA = (
    "trainer string, params_json string, vocab_size long, corpus_tokens long, "
    "corpus_sequences long, export_seconds double, train_seconds double, "
    "words_per_second double, library_versions_json string, has_context boolean"
)


def extract(spark: SparkSession, cfg: Config, dt: str) -> DataFrame:
    """The sequences of ``dt``; a TrainInputError when there are none."""
    seq_table = tables.table_name(cfg.tables, "sequences")
    df = tables.find_partition(spark, seq_table, dt)
    if df is None:
        raise TrainInputError(f"no sequences for dt={dt} in {seq_table}: run build_sequences first")
    return df


def transform(spark: SparkSession, sequences_df: DataFrame, cfg: Config, dt: str) -> TrainResult:
    return item2vec.train(spark, sequences_df, cfg.train, corpus_name=f"corpus-{dt}")


def load(spark: SparkSession, result: TrainResult, cfg: Config, dt: str) -> dict:
    """Write the item side, the context side (or drop a stale one), then the metadata row."""
    written = {}
    for side, df in zip(SIDES, (result.item_df, result.context_df)):
        table = tables.embeddings_table(cfg.tables, side, raw=True)
        if df is not None:
            tables.write_partition(spark, df, table, dt)
            written[f"{side}_table"] = table
        else:
            # A context partition left by an earlier gensim run of this dt must not pass
            # for this run's output side.
            tables.drop_partition(spark, table, dt)
    runs_table = tables.table_name(cfg.tables, "train_runs")
    meta = result.meta
    row = [tuple(meta[name.split()[0]] for name in TRAIN_RUNS_SCHEMA.split(", "))]
    tables.write_partition(spark, spark.createDataFrame(row, TRAIN_RUNS_SCHEMA), runs_table, dt)
    return {**written, "train_runs_table": runs_table}


def run(spark: SparkSession, cfg: Config, dt: str) -> dict:
    with step(log, f"train_item2vec dt={dt} trainer={cfg.train.trainer}", spark):
        result = transform(spark, extract(spark, cfg, dt), cfg, dt)
        summary = {**load(spark, result, cfg, dt),
                   **{k: v for k, v in result.meta.items() if not k.endswith("_json")}}
    return summary
