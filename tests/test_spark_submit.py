"""spark-submit: a job run by pyspark's own spark-submit with the `make package` zip.

Each run is a subprocess with a warehouse and Derby metastore of its own, so it never
touches the test session's metastore. The tables it wrote are read back as plain Parquet.
tests/test_cluster.py runs the pipeline the same way on a standalone cluster.
"""
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import embedlib
from embedlib import provenance
from embedlib.sample_data import SampleSpec, write_sample
from embedlib.serving.backend import cupy_status
from tests.helpers import (
    REPO,
    build_package,
    embedlib_lines,
    outcome,
    package_code_version,
    pipeline_sets,
    spark_submit,
    written_folders,
)

DT = "2024-01-10"
SEQUENCE_COLUMNS = ["user_id", "session_id", "items", "n_items", "start_ts", "end_ts"]


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    return build_package(tmp_path_factory.mktemp("dist") / "embedlib.zip")


def build_sequences(package: Path, workdir: Path, *sets: str) -> subprocess.CompletedProcess:
    """jobs/build_sequences.py --dt DT under spark-submit, local[2]."""
    return spark_submit(package, workdir, "build_sequences", "--dt", DT, sets=sets)


def test_package_holds_the_library_and_its_resources(package, tmp_path):
    names = zipfile.ZipFile(package).namelist()
    assert "embedlib/resources/log4j2.properties" in names
    assert "embedlib/steps/build_sequences.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # Importable from the zip alone: the modules a job needs, and the resource file.
    probe = ("import embedlib, embedlib.steps.build_sequences; from importlib import resources; "
             "print(embedlib.__file__); "
             "print((resources.files('embedlib') / 'resources' / 'log4j2.properties').read_text()[:1])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(package)}).stdout
    assert out.splitlines()[0].startswith(str(package))
    assert build_package(tmp_path / "again.zip").read_bytes() == package.read_bytes()


def test_package_records_the_commit(package, tmp_path):
    git = provenance.git_commit(REPO / "embedlib")
    assert package_code_version(package) == provenance.version_label(embedlib.__version__, git)
    assert len(git["commit"]) >= 7
    # From the zip alone (where git cannot look inside), code_version() has the commit.
    probe = ("import embedlib; from embedlib import registry; "
             "print(embedlib.__file__); print(registry.code_version())")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(package)}).stdout.split()
    assert out[0].startswith(str(package)) and out[1] == package_code_version(package)


@pytest.mark.slow
def test_build_sequences_under_spark_submit_writes_its_tables(package, tmp_path):
    write_sample(SampleSpec(n_events=20000, n_users=300, n_items=300, days=3, end_date=DT), tmp_path / "sample")
    proc = build_sequences(package, tmp_path, f"input.path={tmp_path / 'sample' / 'events'}",
                           "sequences.lookback_days=2", "sequences.min_count=2")
    assert proc.returncode == 0, outcome(proc)
    assert "Traceback" not in proc.stdout + proc.stderr and not embedlib_lines(proc, "ERROR")
    log = "\n".join(embedlib_lines(proc, "INFO"))
    written = {table: folder for (table, dt), folder in written_folders(proc).items() if dt == DT}
    assert {"sequences", "item_stats"} <= set(written)
    for table, folder in written.items():
        assert folder.startswith(f"{tmp_path / 'warehouse'}/embedlib.db/{table}/dt={DT}/run=")

    sequences = pq.read_table(written["sequences"])
    assert sequences.column_names == SEQUENCE_COLUMNS
    assert sequences.num_rows == int(re.search(r"sequences: written=(\d+)", log).group(1)) > 0
    assert min(sequences.column("n_items").to_pylist()) >= 2
    assert all(len(items) == n for items, n in zip(sequences.column("items").to_pylist(),
                                                    sequences.column("n_items").to_pylist()))

    stats = pq.read_table(written["item_stats"]).to_pylist()
    admitted = [r for r in stats if r["admitted"]]
    assert len(admitted) == int(re.search(r"admitted (\d+)", log).group(1)) > 0
    assert min(r["n_events"] for r in admitted) >= 2  # sequences.min_count
    assert {i for items in sequences.column("items").to_pylist() for i in items} <= {r["item_id"] for r in admitted}


@pytest.mark.slow
def test_pipeline_under_spark_submit_records_the_commit_and_the_backends(package, tmp_path):
    write_sample(SampleSpec(n_events=8000, n_users=150, n_items=120, n_clusters=4, days=2, end_date=DT),
                 tmp_path / "sample")
    proc = spark_submit(package, tmp_path, "run_pipeline", "--dt", DT,
                        sets=pipeline_sets(tmp_path, tmp_path / "sample"))
    assert proc.returncode == 0, outcome(proc)
    # The registry row and the report carry the commit the zip was built from.
    registry_rows = pq.read_table(written_folders(proc)[("versions", DT)]).to_pylist()
    assert {r["code_version"] for r in registry_rows} == {package_code_version(package)}
    report = json.loads((tmp_path / "reports" / DT / "report.json").read_text())
    assert report["version"]["code_version"] == package_code_version(package)
    # The backend the executors' tasks scored with reached the driver's log and the summary.
    backend = "numpy" if cupy_status()[0] is None else "cupy"  # serve.backend=auto
    backends = report["steps"]["build_neighbors"]["index_backends"]
    assert [b["backend"] for b in backends] == [backend] and backends[0]["tasks"] >= 1
    assert backends[0]["reason"].startswith("auto")
    assert any("neighbour index:" in line and f"used {backend} on " in line
               for line in embedlib_lines(proc, "INFO"))


@pytest.mark.slow
def test_bad_input_exits_2_with_one_clear_error(package, tmp_path):
    missing = tmp_path / "no-such-log"
    # config asks for local[1]; spark-submit's --master local[2] must win
    proc = build_sequences(package, tmp_path, f"input.path={missing}", "spark.master=local[1]")
    assert proc.returncode == 2, outcome(proc)
    assert any(" on local[2], warehouse" in line for line in embedlib_lines(proc, "INFO"))
    errors = embedlib_lines(proc, "ERROR")
    # The run ends with the one line that says what is wrong (the step's timer logs its failure).
    assert "TableError" in errors[-1] and f"input path '{missing}' does not exist" in errors[-1]
    assert sum("does not exist" in line for line in errors) == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "warehouse" / "embedlib.db" / "sequences").exists()
