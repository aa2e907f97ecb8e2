"""The count-based trainer (``train.trainer: ppmi_svd``): sequences -> item co-occurrence
counts -> shifted PPMI -> randomized low-rank SVD, all as Spark passes; deterministic.

Item vectors are U S^p and context vectors V S^(1-p) (p = ``train.eigen_weight``), so
item . context approximates the SPPMI matrix, as item . context approximates the shifted
PMI for skip-gram (Levy & Goldberg 2014); the stabilize step treats both trainers alike.
Same raw tables and ``train_runs`` row as the gensim trainer. See docs/pipeline.md.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from embedlib import item2vec
from embedlib.config import TrainConfig
from embedlib.cooccurrence import CountSpec, PmiSpec, cooccurrence_counts, item_counts, sppmi
from embedlib.item2vec import TrainResult
from embedlib.log import get_logger
from embedlib.randomized_svd import randomized_svd

log = get_logger(__name__)


def process_tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` and its descendants, reaped children included
    (Linux /proc; None elsewhere). For the Spark JVM of a local master this is every
    executor thread and Python worker; on a cluster only the driver's part."""
    total, stack, seen = 0.0, [pid], set()
    try:
        while stack:
            p = stack.pop()
            if p in seen:
                continue
            seen.add(p)
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                total += sum(int(f) for f in fields[11:15])
                for task in Path(f"/proc/{p}/task").iterdir():
                    stack += [int(c) for c in (task / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
    except OSError:
        return None
    return total / os.sysconf("SC_CLK_TCK")


def _cpu_now(spark) -> float | None:
    jvm_pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    jvm = process_tree_cpu_seconds(jvm_pid)
    return None if jvm is None else jvm + time.process_time()


def count_spec(cfg: TrainConfig) -> CountSpec:
    return CountSpec(cfg.window, cfg.cooccurrence_weighting, cfg.min_count, cfg.cooccurrence_max_length)


def vocabulary_stats(sequences_df: DataFrame, cfg: TrainConfig) -> tuple[DataFrame, DataFrame, dict]:
    """(the admitted items' counts, the persisted frame they are read from, the corpus
    figures); refuses as gensim does."""
    counts_df = item_counts(sequences_df).persist(StorageLevel.MEMORY_AND_DISK)
    stats = counts_df.agg(F.count(F.lit(1)).alias("distinct"), F.sum("count").alias("tokens"),
                          F.count(F.when(F.col("count") >= cfg.min_count, 1)).alias("vocab")).first()
    item2vec.check_vocabulary(stats["distinct"], stats["vocab"] or 0, cfg)
    return counts_df.where(F.col("count") >= cfg.min_count), counts_df, stats.asDict()


def aligned_context(item_df: DataFrame, context_df: DataFrame, dim: int) -> DataFrame:
    """The context vectors of exactly the item side's ids, in its columns; an id with no
    positive SPPMI entry as a context (possible with smoothing != 1) gets a zero vector."""
    zeros = F.array_repeat(F.lit(0.0).cast("float"), dim)
    return (item_df.select("id", "count")
            .join(context_df.withColumnRenamed("vector", "context"), on="id", how="left")
            .select("id", F.coalesce("context", zeros).alias("vector"), "count"))


def train(sequences_df: DataFrame, cfg: TrainConfig) -> TrainResult:
    """Train on ``sequences_df`` (columns of tables.sequences). With
    ``cfg.cooccurrence_table`` the counts (``row, col, count``) are in ``result.tables``."""
    spark = sequences_df.sparkSession
    started, cpu_started, phases = time.perf_counter(), _cpu_now(spark), {}
    counts_df, all_counts_df, stats = vocabulary_stats(sequences_df, cfg)
    cooc_df = cooccurrence_counts(sequences_df, count_spec(cfg)).persist(StorageLevel.MEMORY_AND_DISK)
    pairs = cooc_df.count()
    phases["count"] = time.perf_counter() - started
    m_df = sppmi(cooc_df, PmiSpec(cfg.ppmi_smoothing, cfg.ppmi_shift)).persist(StorageLevel.MEMORY_AND_DISK)
    nonzero = m_df.count()
    phases["pmi"] = time.perf_counter() - started - phases["count"]
    if nonzero == 0:
        raise item2vec.TrainInputError(
            f"the SPPMI matrix has no positive entry ({pairs} co-occurring pairs, "
            f"train.ppmi_shift={cfg.ppmi_shift}): lower the shift or widen train.window")
    svd = randomized_svd(m_df, cfg.vector_size, cfg.svd_oversample, cfg.svd_power_iterations,
                         cfg.seed, cfg.eigen_weight)
    phases.update(svd.phases)
    item_df = (svd.item_df.join(counts_df, on="id", how="inner")
               .select(*item2vec.EMBEDDING_COLS).persist(StorageLevel.MEMORY_AND_DISK))
    vocab_size = item_df.count()
    context_df = aligned_context(item_df, svd.context_df, cfg.vector_size)
    seconds = time.perf_counter() - started
    cpu_ended = _cpu_now(spark)
    log.info("ppmi_svd: %d items, %d co-occurring pairs, %d positive SPPMI entries, singular "
             "values %.4g .. %.4g; phases %s", vocab_size, pairs, nonzero, svd.singular_values[0],
             svd.singular_values[-1], {k: round(v, 2) for k, v in phases.items()})
    meta = item2vec.run_meta(cfg, vocab_size, sequences_df.where(F.size("items") > 0).count(),
                             int(stats["tokens"]), 0.0, seconds, has_context=True)
    meta["words_per_second"] = stats["tokens"] / max(seconds, 1e-9)
    meta["train_cpu_seconds"] = None if cpu_ended is None else cpu_ended - cpu_started
    meta.update({f"phase_{k}_seconds": v for k, v in phases.items()})
    meta.update(cooccurrence_pairs=pairs, sppmi_entries=nonzero)
    m_df.unpersist()
    if not cfg.cooccurrence_table:
        cooc_df.unpersist()
    extra = {cfg.cooccurrence_table: cooc_df} if cfg.cooccurrence_table else {}
    cached = [all_counts_df, item_df, *svd.cached] + ([cooc_df] if cfg.cooccurrence_table else [])
    return TrainResult(item_df, context_df, meta, extra, cached)
