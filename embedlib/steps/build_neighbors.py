"""Step 5: published item vectors of dt -> tables.neighbors (top-K similar items per item).

The index (ids and the float32 matrix) is collected once on the driver, checked, and
broadcast; each executor builds an EmbeddingIndex from it (CuPy on GPU executors, else
NumPy) and scores its share of the queries over Arrow batches (``mapInArrow``): one matmul
per chunk of the index for a whole batch of queries, never a Python UDF per row.

Executors' logs do not reach the job's output, so each task reports the backend and device
it scored with through an accumulator; the driver logs them and puts them in the summary
(``index_backends``), and a backend an executor cannot use fails the step with one
BackendError that names serve.backend.
"""
from __future__ import annotations

import functools
import re
import socket
import uuid
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark import AccumulatorParam, TaskContext
from pyspark.sql import DataFrame, SparkSession

from embedlib import manifest, tables
from embedlib.config import Config
from embedlib.log import get_logger, step
from embedlib.serving.backend import BackendError
from embedlib.serving.index import EmbeddingIndex, ServingError, TopKResult, index_options
from embedlib.serving.published import published_vectors
from embedlib.serving.vectors import ID_COL, arrays_from_arrow, check_vectors

log = get_logger(__name__)

NEIGHBORS_SCHEMA = "item_id string, neighbors array<struct<id:string,score:float>>"

# One index per Python worker and broadcast (by a token made on the driver), reused by the
# tasks that worker runs.
_WORKER_INDEX: dict[str, EmbeddingIndex] = {}


class _TaskBackends(AccumulatorParam):
    """{partition id: (host, backend, device, reason)}: keyed by partition, so a retried
    task counts once."""

    def zero(self, value: dict) -> dict:
        return {}

    def addInPlace(self, value1: dict, value2: dict) -> dict:
        value1.update(value2)
        return value1


def extract(spark: SparkSession, cfg: Config, dt: str) -> DataFrame:
    """The published vectors of registered version dt (id, vector)."""
    return published_vectors(spark, cfg, dt)


def transform(spark: SparkSession, embeddings_df: DataFrame, cfg: Config):
    """Neighbours of every item: (item_id, neighbors), a summary, the index broadcast and
    the accumulator of the tasks' backends (filled when the neighbours are computed)."""
    ids, vectors = arrays_from_arrow(embeddings_df.toArrow())
    check_vectors(ids, vectors, f"embeddings {tables.embeddings_table(cfg.tables, cfg.serve.side)}")
    k = cfg.serve.neighbors_k
    if k > len(ids) - 1:
        raise ServingError(f"serve.neighbors_k={k} needs more than {k} items; "
                           f"the version has {len(ids)}")
    index_bc = spark.sparkContext.broadcast((ids, vectors))
    queries_df = embeddings_df.select(ID_COL)
    if cfg.serve.neighbors_partitions:
        queries_df = queries_df.repartition(cfg.serve.neighbors_partitions)
    backends_acc = spark.sparkContext.accumulator({}, _TaskBackends())
    score = functools.partial(_score_batches, index_bc, uuid.uuid4().hex,
                              index_options(cfg.serve), k, backends_acc)
    neighbors_df = queries_df.mapInArrow(score, NEIGHBORS_SCHEMA)
    summary = {"items": len(ids), "dim": int(vectors.shape[1]), "k": k, "metric": cfg.serve.metric}
    return neighbors_df, summary, index_bc, backends_acc


def load(spark: SparkSession, neighbors_df: DataFrame, cfg: Config, dt: str, summary: dict) -> dict:
    """Write the neighbours partition; for a version that has a manifest, register them with
    it (a new registration of dt, so the lookup service loads them with its vectors)."""
    table = tables.table_name(cfg.tables, "neighbors")
    location = tables.write_partition(spark, neighbors_df, table, dt)
    out = {"neighbors_table": table}
    if dt in manifest.list_dts(manifest.manifest_root(cfg), cfg.serve.side):
        out["manifest"] = manifest.add_neighbors(spark, cfg, dt, cfg.serve.side, {
            "location": location, "k": summary["k"], "metric": summary["metric"], "n_rows": summary["items"]})
    return out


def run(spark: SparkSession, cfg: Config, dt: str) -> dict:
    with step(log, f"build_neighbors dt={dt}", spark):
        neighbors_df, summary, index_bc, backends_acc = transform(spark, extract(spark, cfg, dt), cfg)
        try:
            summary.update(load(spark, neighbors_df, cfg, dt, summary))
        except Exception as exc:
            why = executor_backend_error(exc)
            if why is None:
                raise
            raise BackendError(f"serve.backend={cfg.serve.backend} cannot be used on the "
                               f"executors: {why}") from None
        finally:
            index_bc.unpersist()
        summary["index_backends"] = task_backends(backends_acc.value)
    return summary


def task_backends(by_partition: dict[int, tuple]) -> list[dict]:
    """The tasks' (host, backend, device, reason) counted and logged; one dict per distinct one."""
    counts = Counter(by_partition.values())
    for (host, name, device, reason), n in sorted(counts.items()):
        log.info("neighbour index: %d task(s) on %s used %s on %s (%s)", n, host, name, device, reason)
    if len({name for _, name, _, _ in counts}) > 1:
        log.warning("neighbour index: the tasks used different backends (serve.backend=auto "
                    "with executors that differ in GPU or CuPy)")
    return [{"host": host, "backend": name, "device": device, "reason": reason, "tasks": n}
            for (host, name, device, reason), n in sorted(counts.items())]


def executor_backend_error(exc: Exception) -> str | None:
    """The message of a BackendError raised in a Python worker, from the Spark error's text
    (the driver gets the worker's traceback as text, not the exception)."""
    found = re.findall(r"BackendError: (.+)", str(exc))
    return found[-1].strip() if found else None


def _score_batches(index_bc, token: str, options: dict, k: int, backends_acc,
                   batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: each batch of query ids -> a batch of (item_id, neighbors)."""
    index = _worker_index(index_bc, token, options)
    backend = index.backend
    backends_acc.add({TaskContext.get().partitionId():
                      (socket.gethostname(), backend.name, backend.device, backend.reason)})
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
