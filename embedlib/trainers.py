"""Step 2's one entry: the configured trainer (``train.trainer``) on a sequences frame.

``gensim`` and ``spark`` (MLlib) are in ``item2vec``, ``ppmi_svd`` in ``ppmi_svd``; each gives
an ``item2vec.TrainResult`` (raw item vectors, context vectors where the trainer has them,
the train_runs row). docs/pipeline.md ("Step 2") compares them.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from embedlib import item2vec, ppmi_svd
from embedlib.config import TrainConfig
from embedlib.item2vec import TrainResult, WarmStart


def train(spark: SparkSession, sequences_df: DataFrame, cfg: TrainConfig,
          corpus_name: str = "corpus", init: WarmStart | None = None) -> TrainResult:
    """Train the configured trainer on ``sequences_df`` (columns of tables.sequences).

    ``init``: start from the parent's vectors (gensim, one model; config.py refuses the rest).
    """
    if cfg.trainer == "ppmi_svd":
        return ppmi_svd.train(sequences_df, cfg)
    if cfg.trainer == "spark":
        return item2vec.train_spark(sequences_df, cfg)
    return item2vec.train_gensim(spark, sequences_df, cfg, corpus_name, init)
