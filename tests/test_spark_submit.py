"""spark-submit: a job run by pyspark's own spark-submit with the `make package` zip.

Each run is a subprocess with a warehouse and Derby metastore of its own, so it never
touches the test session's metastore. The tables it wrote are read back as plain Parquet.
"""
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from embedlib.sample_data import SampleSpec, write_sample
from tests.conftest import REPO

SPARK_SUBMIT = Path(sys.executable).with_name("spark-submit")
DT = "2024-01-10"
SEQUENCE_COLUMNS = ["user_id", "session_id", "items", "n_items", "start_ts", "end_ts"]


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """A fresh zip from scripts/package.py (what `make package` runs), never a stale one."""
    out = tmp_path_factory.mktemp("dist") / "embedlib.zip"
    subprocess.run([sys.executable, str(REPO / "scripts" / "package.py"), "--out", str(out)],
                   check=True, capture_output=True)
    return out


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
    rebuilt = tmp_path / "again.zip"
    subprocess.run([sys.executable, str(REPO / "scripts" / "package.py"), "--out", str(rebuilt)], check=True)
    assert rebuilt.read_bytes() == package.read_bytes()


def spark_submit(package: Path, workdir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """jobs/build_sequences.py under spark-submit, local[2], warehouse and metastore in workdir."""
    sets = [f"spark.warehouse_dir={workdir / 'warehouse'}", f"spark.metastore_dir={workdir / 'metastore_db'}",
            "spark.master=local[2]", "spark.shuffle_partitions=2", *overrides]
    cmd = [str(SPARK_SUBMIT), "--master", "local[2]", "--py-files", str(package),
           "--conf", f"spark.pyspark.python={sys.executable}",
           str(REPO / "jobs" / "build_sequences.py"),
           "--conf", str(REPO / "conf" / "local.yaml"), "--dt", DT,
           *[arg for item in sets for arg in ("--set", item)]]
    # The venv first on PATH, as when it is activated: spark-submit finds SPARK_HOME with the
    # python3 it finds there. cwd: Derby writes derby.log in the working folder.
    env = {**os.environ, "PATH": f"{SPARK_SUBMIT.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=1200)


def embedlib_lines(proc: subprocess.CompletedProcess, level: str) -> list[str]:
    # spark-submit passes the Python driver's stderr on to its own stdout.
    return [line for line in (proc.stdout + proc.stderr).splitlines() if f" {level} [embedlib" in line]


@pytest.mark.slow
def test_build_sequences_under_spark_submit_writes_its_tables(package, tmp_path):
    write_sample(SampleSpec(n_events=20000, n_users=300, n_items=300, days=3, end_date=DT), tmp_path / "sample")
    proc = spark_submit(package, tmp_path, f"input.path={tmp_path / 'sample' / 'events'}",
                        "sequences.lookback_days=2", "sequences.min_count=2")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "Traceback" not in proc.stdout + proc.stderr and not embedlib_lines(proc, "ERROR")
    log = "\n".join(embedlib_lines(proc, "INFO"))
    written = {m[0]: m[1] for m in re.findall(r"wrote embedlib\.(\w+) dt=" + DT + r" -> file:(\S+)", log)}
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
def test_bad_input_exits_2_with_one_clear_error(package, tmp_path):
    missing = tmp_path / "no-such-log"
    # config asks for local[1]; spark-submit's --master local[2] must win
    proc = spark_submit(package, tmp_path, f"input.path={missing}", "spark.master=local[1]")
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-4000:]
    assert any(" on local[2], warehouse" in line for line in embedlib_lines(proc, "INFO"))
    errors = embedlib_lines(proc, "ERROR")
    # The run ends with the one line that says what is wrong (the step's timer logs its failure).
    assert "TableError" in errors[-1] and f"input path '{missing}' does not exist" in errors[-1]
    assert sum("does not exist" in line for line in errors) == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "warehouse" / "embedlib.db" / "sequences").exists()
