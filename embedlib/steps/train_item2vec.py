"""Step 2: tables.sequences[dt] -> raw item (and context) vectors[dt] and train_runs[dt].

Under train.init=warm it also reads the registry (which version is the parent), the
parent's train_runs row and its raw item and context vectors.
"""
from __future__ import annotations

import datetime as _dt

from pyspark.sql import DataFrame, SparkSession

from embedlib import evaluate, registry, spark_passes, tables, trainers
from embedlib.config import Config
from embedlib.item2vec import TrainInputError, TrainResult, WarmStart
from embedlib.log import get_logger, step

log = get_logger(__name__)

SIDES = ("item", "context")
TRAIN_RUNS_SCHEMA = (
    "trainer string, params_json string, vocab_size long, corpus_tokens long, "
    "corpus_sequences long, export_seconds double, train_seconds double, "
    "words_per_second double, library_versions_json string, has_context boolean, "
    "ensemble_size int, ensemble_runner string, seeds_json string, member_seconds_json string, "
    "member_cpu_seconds_json string, member_agreement double, init string, init_parent_dt string, "
    "cold_dt string"
)


def extract(spark: SparkSession, cfg: Config, dt: str) -> DataFrame:
    """The sequences of ``dt``; a TrainInputError when there are none."""
    seq_table = tables.table_name(cfg.tables, "sequences")
    df = tables.find_partition(spark, seq_table, dt)
    if df is None:
        raise TrainInputError(f"no sequences for dt={dt} in {seq_table}: run build_sequences first")
    return df


def warm_start(spark: SparkSession, cfg: Config, dt: str) -> WarmStart | None:
    """The parent's raw vectors to start ``dt`` from, or None (cold; the log says why)."""
    if cfg.train.init != "warm":
        return None
    parent_dt, reason = registry.previous_dt(spark, cfg, dt)
    if parent_dt is None:
        log.warning("train.init=warm: no parent version (%s); cold start", reason)
        return None
    runs = tables.find_partition(spark, tables.table_name(cfg.tables, "train_runs"), parent_dt)
    row = runs.first() if runs is not None else None
    cold_dt = (row.asDict().get("cold_dt") if row is not None else None) or parent_dt
    age = (_dt.date.fromisoformat(dt) - _dt.date.fromisoformat(cold_dt)).days
    every = cfg.train.cold_every_days
    if every and age >= every:
        log.info("train.init=warm: the last cold start (%s) is %d days old, cold_every_days=%d; "
                 "cold start", cold_dt, age, every)
        return None
    frames = {}
    for side in ("item", "context"):
        table = tables.embeddings_table(cfg.tables, side, raw=True)
        frames[side] = tables.find_partition(spark, table, parent_dt)
        if frames[side] is None:
            log.warning("train.init=warm: parent %s has no raw %s vectors in %s; cold start",
                        parent_dt, side, table)
            return None
    ids, item = evaluate.vectors_to_numpy(frames["item"])
    context_ids, context = evaluate.vectors_to_numpy(frames["context"])
    if item.shape[1] != cfg.train.vector_size:
        log.warning("train.init=warm: parent %s has dimension %d, train.vector_size is %d; cold start",
                    parent_dt, item.shape[1], cfg.train.vector_size)
        return None
    position = {i: n for n, i in enumerate(context_ids)}
    order = [position.get(i, -1) for i in ids]
    if min(order, default=0) < 0:
        log.warning("train.init=warm: parent %s's raw item and context sides hold other ids; cold start",
                    parent_dt)
        return None
    log.info("train.init=warm: starting from parent %s (%d items, last cold start %s)",
             parent_dt, len(ids), cold_dt)
    return WarmStart(parent_dt, ids, item, context[order], cold_dt)


def transform(spark: SparkSession, sequences_df: DataFrame, cfg: Config, dt: str) -> TrainResult:
    init = warm_start(spark, cfg, dt)
    result = trainers.train(spark, sequences_df, cfg.train, corpus_name=f"corpus-{dt}", init=init)
    result.meta["cold_dt"] = init.cold_dt if init else dt
    return result


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
    for name, df in result.tables.items():
        table = tables.qualified(cfg.tables, name)
        tables.write_partition(spark, df, table, dt)
        written.setdefault("extra_tables", []).append(table)
    runs_table = tables.table_name(cfg.tables, "train_runs")
    meta = result.meta
    row = [tuple(meta[name.split()[0]] for name in TRAIN_RUNS_SCHEMA.split(", "))]
    tables.write_partition(spark, spark.createDataFrame(row, TRAIN_RUNS_SCHEMA), runs_table, dt)
    return {**written, "train_runs_table": runs_table}


def run(spark: SparkSession, cfg: Config, dt: str) -> dict:
    with step(log, f"train_item2vec dt={dt} trainer={cfg.train.trainer}", spark):
        result = transform(spark, extract(spark, cfg, dt), cfg, dt)
        try:
            summary = {**load(spark, result, cfg, dt),
                       **{k: v for k, v in result.meta.items() if not k.endswith("_json")}}
        finally:
            spark_passes.release(result.cached)
    return summary
