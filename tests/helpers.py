"""Shared test helpers (as gensim's test/utils.py): paths, configs, data writers, references.

Plain functions and constants only; fixtures live in tests/conftest.py. Test modules import
from here, never from each other.
"""
from __future__ import annotations

import datetime as dt_
import json
import os
import re
import signal
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import embedlib
from embedlib import churn, provenance, spark_passes, tables
from embedlib.config import Config, config_from_dict
from embedlib.evaluate import vectors_to_numpy

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


# spark-submit runs with the `make package` zip (tests/test_spark_submit.py, tests/test_cluster.py)

SPARK_SUBMIT = Path(sys.executable).with_name("spark-submit")
# A small pipeline run: a few seconds per step.
PIPELINE_SETS = ("sequences.lookback_days=2", "sequences.min_count=2", "train.vector_size=16",
                 "train.epochs=2", "train.workers=1", "stabilize.score_sample=64",
                 "stabilize.overlap_queries=50", "serve.neighbors_k=5")


def build_package(out: Path) -> Path:
    """A fresh zip from scripts/package.py (what `make package` runs), never a stale one."""
    subprocess.run([sys.executable, str(REPO / "scripts" / "package.py"), "--out", str(out)],
                   check=True, capture_output=True)
    return out


def package_code_version(package: Path) -> str:
    """The code version the zip's build info gives: version+commit[.dirty]. Tests compare
    what a run recorded with this, not with git: the checkout may move while they run."""
    info = json.loads(zipfile.ZipFile(package).read(f"embedlib/{provenance.BUILD_INFO}"))
    return provenance.version_label(embedlib.__version__, info)


def spark_submit(package: Path, workdir: Path, job: str, *job_args: str, sets=(), master: str = "local[2]",
                 python=sys.executable, submit_args=(), env=None, timeout: int = 1200,
                 ) -> subprocess.CompletedProcess:
    """jobs/<job>.py on conf/local.yaml under pyspark's spark-submit: ``master``, the zip as
    --py-files, ``python`` for the driver and the executors, the warehouse in ``workdir``,
    then ``job_args`` and ``sets`` (--set overrides). A timeout or an interrupt kills
    spark-submit and the driver it started (their own process group)."""
    sets = [f"spark.warehouse_dir={workdir / 'warehouse'}", "spark.master=local[2]",
            "spark.shuffle_partitions=2", *sets]
    cmd = [str(SPARK_SUBMIT), "--master", master, "--py-files", str(package),
           "--conf", f"spark.pyspark.python={python}", *submit_args,
           str(REPO / "jobs" / f"{job}.py"), "--conf", str(REPO / "conf" / "local.yaml"), *job_args,
           *[arg for item in sets for arg in ("--set", item)]]
    # The venv first on PATH, as when it is activated: spark-submit finds SPARK_HOME with the
    # python3 it finds there. cwd: Derby writes derby.log in the working folder.
    env = {**os.environ, **(env or {}),
           "PATH": f"{SPARK_SUBMIT.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return finish(start_group(cmd, workdir, env), timeout)


def start_group(cmd: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    """``cmd`` in a process group of its own (finish() can stop all it started), output piped."""
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
    """Wait for a start_group() process; a timeout or an interrupt kills its whole group."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def pipeline_sets(workdir: Path, sample: Path) -> list[str]:
    """--set overrides of a small pipeline run on the sample log under ``sample``."""
    return [f"input.path={sample / 'events'}", f"report.out_dir={workdir / 'reports'}", *PIPELINE_SETS]


def embedlib_lines(proc: subprocess.CompletedProcess, level: str) -> list[str]:
    """The job's own log lines of ``level`` (spark-submit passes the driver's stderr on to its stdout)."""
    return [line for line in (proc.stdout + proc.stderr).splitlines() if f" {level} [embedlib" in line]


def outcome(proc: subprocess.CompletedProcess) -> str:
    """The end of a run's output without the JVM's INFO lines: what a failed assertion shows."""
    lines = [line for line in (proc.stdout + proc.stderr).splitlines()
             if not re.match(r"\d\d/\d\d/\d\d \S+ INFO ", line)]
    return "\n".join(lines)[-4000:]


def written_folders(proc: subprocess.CompletedProcess) -> dict[tuple[str, str], str]:
    """{(table, dt): the run folder written last}, from the job's log lines."""
    log = "\n".join(embedlib_lines(proc, "INFO"))
    return {(m[0], m[1]): m[2] for m in re.findall(r"wrote \w+\.(\w+) dt=(\S+) -> file:(\S+)", log)}


def tables_of(proc: subprocess.CompletedProcess) -> dict[tuple[str, str], list[dict]]:
    """{(table, dt): rows} of the versions, sequences and neighbors partitions a run wrote."""
    return {key: pq.read_table(folder).to_pylist() for key, folder in written_folders(proc).items()
            if key[0] in ("versions", "sequences", "neighbors")}


def assert_close(got, expected, where: str) -> None:
    """Equal, floats to 1e-6 (sums may run in another order on another partitioning)."""
    import pytest

    if isinstance(expected, dict):
        assert sorted(got) == sorted(expected), where
        for key in expected:
            assert_close(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-6), where
    else:
        assert got == expected, where


def assert_same_versions(got: dict, expected: dict, dts) -> dict[str, dict]:
    """Two runs' tables_of() hold the same sequences counts, registry rows (metrics to 1e-6)
    and neighbours for ``dts``; the registry rows of ``got`` by dt and side."""
    assert sorted(got) == sorted(expected) == sorted(
        (table, dt) for table in ("versions", "sequences", "neighbors") for dt in dts)
    rows = {}
    for dt in dts:
        assert len(got["sequences", dt]) == len(expected["sequences", dt]) > 0
        versions, expected_versions = ({r["side"]: r for r in tables["versions", dt]} for tables in (got, expected))
        assert sorted(versions) == sorted(expected_versions) == ["context", "item"]
        for side, row in expected_versions.items():
            for key in ("dim", "n_rows", "n_carried", "parent_dt", "root", "root_reason", "mode", "code_version"):
                assert versions[side][key] == row[key], (dt, side, key)
            assert_close(json.loads(versions[side]["metrics_json"]), json.loads(row["metrics_json"]), f"{dt} {side}")
        # The same vectors give the same neighbours.
        neighbours, expected_neighbours = ({r["item_id"]: [n["id"] for n in r["neighbors"]]
                                            for r in tables["neighbors", dt]} for tables in (got, expected))
        assert neighbours == expected_neighbours and len(neighbours) == versions["item"]["n_rows"]
        rows[dt] = versions
    return rows


# Planted sequences for the training tests (tests/test_train_item2vec.py, tests/test_ensemble.py)
TRAIN_DT = "2024-01-10"
SEQ_SCHEMA = ("user_id string, session_id string, items array<string>, n_items int, "
              "start_ts timestamp, end_ts timestamp")
# Ids that a whitespace-split corpus file, a line-based text writer or a sloppy encoding
# would change.
ODD_IDS = ["a b", "x%41", "é+1", "tab\tid", "new\nline", 'say "hi", \'yo\'', "日本 🙂"]
CLUSTER_A = ODD_IDS + [f"a{i}" for i in range(10 - len(ODD_IDS))]
CLUSTER_B = [f"b{i}" for i in range(10)]
FAST = {"vector_size": 16, "window": 3, "epochs": 10, "workers": 1, "seed": 3,
        "sample": 0.0, "min_count": 1}


def planted_sequences(n: int = 240, seed: int = 0) -> list[list[str]]:
    """Sequences of 6 items, each drawn from one of two clusters (alternating)."""
    rng = np.random.default_rng(seed)
    clusters = (CLUSTER_A, CLUSTER_B)
    return [list(rng.choice(clusters[s % 2], 6, replace=False)) for s in range(n)]


def write_sequences(spark, cfg, sequences: list[list[str]], dt: str = TRAIN_DT) -> None:
    start = dt_.datetime(2024, 1, 10, 8, 0)
    rows = [(f"u{s % 17}", f"{s}-0", items, len(items), start + dt_.timedelta(minutes=s),
             start + dt_.timedelta(minutes=s + 1)) for s, items in enumerate(sequences)]
    df = spark.createDataFrame(rows, SEQ_SCHEMA)
    tables.write_partition(spark, df, tables.table_name(cfg.tables, "sequences"), dt)


def read_raw_side(spark, cfg, side: str, dt: str = TRAIN_DT) -> tuple[np.ndarray, np.ndarray, dict]:
    df = tables.read_partition(spark, tables.embeddings_table(cfg.tables, side, raw=True), dt)
    ids, vectors = vectors_to_numpy(df)
    order = np.argsort(ids)
    counts = {r.id: r["count"] for r in df.select("id", "count").collect()}
    return ids[order], vectors[order], counts


def neighbour_churn(joined, f_t, dim: int, k: int, n_queries: int) -> tuple:
    """(query_ids, before, after) of ``churn.same_id_pass`` on its own, for the churn tests:
    ``n_queries`` shared ids in ``churn.query_order``, each query's k nearest shared ids in the
    parent (``b``) and today (``t @ f_t``). The pipeline runs the same pass with the cosines."""
    queries = churn.pick_queries(joined, n_queries)
    if not queries.num_rows:
        return [], [], []
    result = churn.same_id_pass(joined, f_t, dim, k, queries, moved_threshold=2.0)
    spark_passes.release(result.cached)
    return result.query_ids, result.before, result.after
