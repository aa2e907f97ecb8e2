"""Shared by the benchmarks: machine description, timing, and the results file."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parent / "work"
# The real behaviour log beside the repository (see its README for the licence; never copied).
MOVIELENS = REPO.parent / "shared" / "data" / "movielens-latest-small" / "ratings.csv"
MOVIELENS_DT = "2018-09-24"  # after the last rating: the whole history in one dt
# The count-based trainer as the benchmarks run it: TrainConfig's defaults (window 5, no context
# smoothing, no shift, 64 dimensions, p = 1), every item admitted as in gensim's runs.
PPMI = {"trainer": "ppmi_svd", "vector_size": 64, "window": 5, "ppmi_smoothing": 1.0, "ppmi_shift": 1.0,
        "eigen_weight": 1.0, "min_count": 1}


def load_average() -> float | None:
    """The 1-minute load average now (None where the OS has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


# Taken when a benchmark imports this module, i.e. when it starts.
LOAD_AT_START = load_average()


def machine() -> dict:
    """What the figures were measured on (cores matter: these machines are small and shared)."""
    versions = {}
    for pkg in ("pyspark", "numpy", "scipy", "pyarrow", "gensim", "faiss-cpu", "cupy-cuda12x", "torch"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
            "load_average_1m_at_start": LOAD_AT_START, "load_average_1m_at_end": load_average(),
            "versions": versions}


def timed(fn: Callable, *args, **kwargs) -> tuple[float, object]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def write_results(name: str, results: dict) -> dict:
    """Add the machine, write benchmarks/results/<name>.json, print it as the last line."""
    results = {"benchmark": name, "machine": machine(), **results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps(results, sort_keys=True))
    return results


def movielens_sequences(app: str, sets: list[str]):
    """(cfg, spark, sequences_df) for the MovieLens log as conf/movielens.yaml builds it (dt
    ``MOVIELENS_DT``, warehouse benchmarks/work/<app>_wh, then ``sets``), the sequences read
    once and persisted; None, after saying so, where the log is absent."""
    if not MOVIELENS.exists():
        print(f"skipped: {MOVIELENS} is absent")
        return None
    from embedlib.config import load_config
    from embedlib.sequences import build_sequences
    from embedlib.spark import get_spark
    from embedlib.tables import read_input

    cfg = load_config(REPO / "conf" / "movielens.yaml",
                      [f"input.path={MOVIELENS}", f"spark.warehouse_dir=benchmarks/work/{app}_wh", *sets])
    spark = get_spark(cfg.spark, app)
    seq_df = build_sequences(read_input(spark, cfg.input), cfg.input, cfg.sequences, MOVIELENS_DT).sequences_df
    return cfg, spark, spark.createDataFrame(seq_df.toArrow()).persist()


def neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int, n_queries: int) -> float:
    """Mean share of the k cosine nearest neighbours (self excluded) that a and b agree on.

    For matrices in memory; the pipeline measures the same on Spark (``embedlib.churn``).

    Parameters
    ----------
    a, b : ndarray, shape (n, e), float
        The same ids, row for row, in two versions.
    k : int
        At most n - 1 neighbours are used.
    n_queries : int
        The first min(n_queries, n) rows are the queries.

    Returns
    -------
    float, in [0, 1]
    """
    from embedlib import knn

    q = np.arange(min(n_queries, a.shape[0]))
    return float(knn.shared_share(knn.nearest_neighbors(a, q, k), knn.nearest_neighbors(b, q, k)).mean())
