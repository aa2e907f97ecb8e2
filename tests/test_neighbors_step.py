"""build_neighbors through Spark: a small published partition -> the neighbours table."""
import logging
import socket
import subprocess
import sys

import numpy as np
import pytest
from pyspark.sql import types as T

from embedlib import tables
from embedlib.cli import run_job
from embedlib.registry import RegistryError
from embedlib.serving import BackendError, EmbeddingIndex, ServingError
from embedlib.serving.backend import cupy_status
from embedlib.serving.published import partition_files
from embedlib.steps import build_neighbors
from tests.helpers import REPO, reference_topk

DT = "2024-01-10"
EMBEDDINGS_SCHEMA = T.StructType([
    T.StructField("id", T.StringType()), T.StructField("vector", T.ArrayType(T.FloatType())),
    T.StructField("count", T.LongType()), T.StructField("carried", T.BooleanType()),
])


def publish(spark, cfg, ids, vectors):
    rows = [(i, v.tolist(), 1, False) for i, v in zip(ids, vectors)]
    df = spark.createDataFrame(rows, EMBEDDINGS_SCHEMA).repartition(3)
    tables.write_partition(spark, df, tables.embeddings_table(cfg.tables, cfg.serve.side), DT)


def test_neighbors_table_equals_brute_force(spark, cfg_factory):
    rng = np.random.default_rng(5)
    ids = np.array([f"m{i:03d}" for i in range(120)], dtype=object)
    vectors = rng.standard_normal((120, 8)).astype(np.float32)
    cfg = cfg_factory(serve={"neighbors_k": 7, "neighbors_partitions": 2, "backend": "numpy",
                             "max_chunk_bytes": 4096, "require_registered": False})
    publish(spark, cfg, ids, vectors)
    summary = build_neighbors.run(spark, cfg, DT)
    assert summary["items"] == 120 and summary["k"] == 7 and summary["dim"] == 8
    out_df = tables.read_partition(spark, summary["neighbors_table"], DT)
    assert out_df.schema.simpleString() == (
        "struct<item_id:string,neighbors:array<struct<id:string,score:float>>>")
    got = {r.item_id: r.neighbors for r in out_df.collect()}
    assert sorted(got) == sorted(ids.tolist())
    scores, rows = reference_topk(vectors, vectors, 7, exclude_rows=np.arange(120), metric="cosine")
    for i, item in enumerate(ids):
        assert [n.id for n in got[item]] == ids[rows[i]].tolist()
        np.testing.assert_allclose([n.score for n in got[item]], scores[i], rtol=1e-5, atol=1e-6)


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelname, record.getMessage()))


@pytest.fixture
def embedlib_log():
    """(level, message) of every embedlib log record while the test runs (the driver's)."""
    handler, logger = _Lines(), logging.getLogger("embedlib")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def test_the_tasks_backends_reach_the_driver(spark, cfg_factory, embedlib_log, rng):
    ids = np.array([f"b{i:02d}" for i in range(40)], dtype=object)
    cfg = cfg_factory(serve={"neighbors_k": 3, "neighbors_partitions": 3, "backend": "numpy",
                             "require_registered": False})
    publish(spark, cfg, ids, rng.standard_normal((40, 4)).astype(np.float32))
    summary = build_neighbors.run(spark, cfg, DT)
    # One entry per distinct (host, backend, device): here every task, in Python workers.
    assert summary["index_backends"] == [{"host": socket.gethostname(), "backend": "numpy",
                                          "device": "cpu", "reason": "as configured", "tasks": 3}]
    assert ("INFO", f"neighbour index: 3 task(s) on {socket.gethostname()} used numpy on cpu "
                    "(as configured)") in embedlib_log


def test_task_backends_counts_each_partition_once_and_warns_on_a_mix(embedlib_log):
    gpu = ("h1", "cupy", "cuda:0 NVIDIA H200", "auto")
    cpu = ("h2", "numpy", "cpu", "auto: cupy is not installed")
    assert build_neighbors.task_backends({0: gpu, 1: cpu, 2: gpu}) == [
        {"host": "h1", "backend": "cupy", "device": "cuda:0 NVIDIA H200", "reason": "auto", "tasks": 2},
        {"host": "h2", "backend": "numpy", "device": "cpu", "reason": "auto: cupy is not installed",
         "tasks": 1}]
    assert [level for level, _ in embedlib_log] == ["INFO", "INFO", "WARNING"]
    assert build_neighbors.task_backends({}) == []


@pytest.mark.skipif(cupy_status()[0] is not None, reason="this machine has CuPy and a CUDA device")
def test_cupy_without_a_gpu_fails_with_one_clear_error(spark, cfg_factory):
    cfg = cfg_factory(serve={"neighbors_k": 2, "backend": "cupy", "require_registered": False})
    publish(spark, cfg, np.array(["a", "b", "c", "d"], dtype=object), np.eye(4, dtype=np.float32))
    with pytest.raises(BackendError) as raised:
        build_neighbors.run(spark, cfg, DT)
    message = str(raised.value)
    assert message.startswith("serve.backend=cupy cannot be used on the executors: backend cupy "
                              "was requested but ")
    assert "\n" not in message and "Traceback" not in message
    assert tables.find_partition(spark, tables.table_name(cfg.tables, "neighbors"), DT) is None
    # What the job's entry point makes of it: exit code 2 (cli.run_job).
    assert run_job(lambda argv: build_neighbors.run(spark, cfg, DT)) == 2


def test_serving_reads_the_published_partition_without_spark(spark, cfg_factory):
    ids = np.array(["x", "y", "z", "w"], dtype=object)
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    cfg = cfg_factory()
    publish(spark, cfg, ids, vectors)
    with pytest.raises(RegistryError, match=f"version {DT} is not registered"):
        partition_files(spark, cfg, DT)
    cfg.serve.require_registered = False
    files = partition_files(spark, cfg, DT)
    assert files and all(f.startswith("file:") for f in files)
    index = EmbeddingIndex.from_parquet(files, backend="numpy")
    np.testing.assert_array_equal(index.lookup(["w", "x"]).vectors, vectors[[3, 0]])


def test_neighbors_k_larger_than_the_version_is_an_error(spark, cfg_factory):
    cfg = cfg_factory(serve={"neighbors_k": 5, "require_registered": False})
    publish(spark, cfg, np.array(["a", "b", "c"], dtype=object), np.eye(3, dtype=np.float32))
    with pytest.raises(ServingError, match="neighbors_k=5 needs more than 5 items"):
        build_neighbors.run(spark, cfg, DT)


def test_job_help():
    out = subprocess.run([sys.executable, str(REPO / "jobs" / "build_neighbors.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--conf" in out and "--dt" in out and "neighbors" in out
