"""Shared test helpers (as gensim's test/utils.py): paths, configs, data writers, references.

Plain functions and constants only; fixtures live in tests/conftest.py. Test modules import
from here, never from each other.
"""
from __future__ import annotations

import sys
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedlib.config import Config, config_from_dict

REPO = Path(__file__).resolve().parents[1]
# The real behaviour log (not part of the repo); tests that use it skip when it is absent.
MOVIELENS = REPO.parent / "shared" / "data" / "movielens-latest-small"


def spark_section(warehouse: Path) -> dict:
    """The test session's spark settings: local[2,2] (a failed task is retried once)."""
    return {"spark": {"master": "local[2,2]", "warehouse_dir": str(warehouse),
                      "shuffle_partitions": 4, "ui_enabled": False, "driver_memory": "2g"}}


def make_config(warehouse: Path, **sections) -> Config:
    """A config on the test warehouse with a database of its own, plus ``sections``."""
    raw = spark_section(warehouse)
    raw["tables"] = {"database": f"t_{uuid.uuid4().hex[:10]}"}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config_from_dict(raw, "tests")


def write_vectors(path, x, ids=None) -> str:
    """A Parquet file of (id string, vector list<float>); a None row is a null vector."""
    ids = ids if ids is not None else [f"i{k}" for k in range(len(x))]
    vec = pa.array([None if v is None else list(map(float, v)) for v in x], type=pa.list_(pa.float32()))
    pq.write_table(pa.table({"id": pa.array(ids), "vector": vec}), path)
    return str(path)


def two_tower(tmp_path, name, t, w, **stab) -> dict:
    """Config sections that stabilize item vectors ``t`` and user vectors ``w`` from files."""
    return {"stabilize": {"items": {"path": write_vectors(tmp_path / f"{name}_t.parquet", t)},
                          "other": {"path": write_vectors(tmp_path / f"{name}_w.parquet", w)},
                          "other_side": "user", **stab}}


def reference_topk(queries, matrix, k, exclude_rows=None, metric="dot"):
    """Brute-force top-k: the full score matrix, rows sorted by (score desc, row asc)."""
    queries, matrix = queries.astype(np.float32), matrix.astype(np.float32)
    full = queries @ matrix.T
    if metric == "cosine":
        q_norm, m_norm = np.linalg.norm(queries, axis=1), np.linalg.norm(matrix, axis=1)
        full = full / np.where(q_norm > 0, q_norm, 1)[:, None] / np.where(m_norm > 0, m_norm, 1)
    if exclude_rows is not None:
        full[np.arange(len(queries)), exclude_rows] = -np.inf
    row_numbers = np.arange(len(matrix))
    rows = np.stack([np.lexsort((row_numbers, -scores))[:k] for scores in full])
    return np.take_along_axis(full, rows, axis=1), rows


def job(name, warehouse, *sets) -> list[str]:
    """The command line of jobs/<name>.py on conf/local.yaml with a warehouse of its own."""
    args = [sys.executable, str(REPO / "jobs" / f"{name}.py"), "--conf", str(REPO / "conf" / "local.yaml"),
            "--set", f"spark.warehouse_dir={warehouse}",
            "--set", "spark.master=local[2]", "--set", "spark.driver_memory=1g"]
    for s in sets:
        args += ["--set", s]
    return args


def error_lines(stderr: str) -> list[str]:
    """The ERROR lines of a job's log."""
    return [line for line in stderr.splitlines() if " ERROR " in line]
