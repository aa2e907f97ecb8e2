"""Step 5: published item vectors of dt -> tables.neighbors (top-K similar items per item).

The index (ids and the float32 matrix) is collected once on the driver, checked, and
broadcast; each executor builds an EmbeddingIndex from it (CuPy on GPU executors, else
NumPy) and scores its share of the queries over Arrow batches (``mapInArrow``): one matmul
per chunk of the index for a whole batch of queries, never a Python UDF per row.
"""
from __future__ import annotations

import functools
import uuid
from typing import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from embedlib import tables
from embedlib.config import Config
from embedlib.log import get_logger, step
from embedlib.serving.index import EmbeddingIndex, ServingError, TopKResult, index_options
from embedlib.registry import published_table
from embedlib.serving.published import published_vectors
from embedlib.serving.vectors import ID_COL, arrays_from_arrow, check_vectors

log = get_logger(__name__)

NEIGHBORS_SCHEMA = "item_id string, neighbors array<struct<id:string,score:float>>"

# One index per Python worker and broadcast (by a token made on the driver), reused by the
# tasks that worker runs.
_WORKER_INDEX: dict[str, EmbeddingIndex] = {}


def extract(spark: SparkSession, cfg: Config, dt: str) -> DataFrame:
    """The published vectors of registered version dt (id, vector)."""
    return published_vectors(spark, cfg, dt)


def transform(spark: SparkSession, embeddings_df: DataFrame, cfg: Config):
    """Neighbours of every item: (item_id, neighbors), a summary, the index broadcast."""
    ids, vectors = arrays_from_arrow(embeddings_df.toArrow())
    check_vectors(ids, vectors, f"embeddings {published_table(cfg, cfg.serve.side)}")
    k = cfg.serve.neighbors_k
    if k > len(ids) - 1:
        raise ServingError(f"serve.neighbors_k={k} needs more than {k} items; "
                           f"the version has {len(ids)}")
    index_bc = spark.sparkContext.broadcast((ids, vectors))
    queries_df = embeddings_df.select(ID_COL)
    if cfg.serve.neighbors_partitions:
        queries_df = queries_df.repartition(cfg.serve.neighbors_partitions)
    score = functools.partial(_score_batches, index_bc, uuid.uuid4().hex,
                              index_options(cfg.serve), k)
    neighbors_df = queries_df.mapInArrow(score, NEIGHBORS_SCHEMA)
    summary = {"items": len(ids), "dim": int(vectors.shape[1]), "k": k, "metric": cfg.serve.metric}
    return neighbors_df, summary, index_bc


def load(spark: SparkSession, neighbors_df: DataFrame, cfg: Config, dt: str) -> dict:
    table = tables.qualified(cfg.tables, cfg.tables.neighbors)
    tables.write_partition(spark, neighbors_df, table, dt)
    return {"neighbors_table": table}


def run(spark: SparkSession, cfg: Config, dt: str) -> dict:
    with step(log, f"build_neighbors dt={dt}", spark):
        neighbors_df, summary, index_bc = transform(spark, extract(spark, cfg, dt), cfg)
        try:
            summary.update(load(spark, neighbors_df, cfg, dt))
        finally:
            index_bc.unpersist()
    return summary


def _score_batches(index_bc, token: str, options: dict, k: int,
                   batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: each batch of query ids -> a batch of (item_id, neighbors)."""
    index = _worker_index(index_bc, token, options)
    for batch in batches:
        query_ids = batch.column(0).to_numpy(zero_copy_only=False)
        yield neighbors_batch(index.topk(query_ids, k=k, exclude_self=True, unknown_ids="error"))


def _worker_index(index_bc, token: str, options: dict) -> EmbeddingIndex:
    if token not in _WORKER_INDEX:
        _WORKER_INDEX.clear()
        ids, vectors = index_bc.value
        _WORKER_INDEX[token] = EmbeddingIndex(ids, vectors, **options)
    return _WORKER_INDEX[token]


def neighbors_batch(result: TopKResult) -> pa.RecordBatch:
    """Arrow batch (item_id string, neighbors list<struct<id string, score float>>).

    The neighbour lists are built from the flat (b * k) ids and scores and their offsets,
    without a Python loop over rows.
    """
    b, k = result.ids.shape
    offsets = pa.array(np.arange(0, b * k + 1, k, dtype=np.int32))
    pairs = pa.StructArray.from_arrays(
        [pa.array(result.ids.ravel(), pa.string()), pa.array(result.scores.ravel(), pa.float32())],
        names=["id", "score"])
    neighbors = pa.ListArray.from_arrays(offsets, pairs)
    return pa.RecordBatch.from_arrays([pa.array(result.query_ids, pa.string()), neighbors],
                                      names=["item_id", "neighbors"])
