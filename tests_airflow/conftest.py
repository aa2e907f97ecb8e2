"""Real Airflow for the DAG tests: a temporary AIRFLOW_HOME with a sqlite metadata DB.

Run by .venv-airflow's pytest (`make test-airflow`), never by the main suite: Airflow and
the pipeline's pyspark live in separate venvs. Airflow reads its settings when it is first
imported, so they are set here, before any test module imports it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
# The pipeline's venv (pyspark, spark-submit, embedlib's dependencies): `make setup` builds it.
PIPELINE_VENV = Path(os.environ.get("EMBEDLIB_PIPELINE_VENV", REPO / ".venv"))

AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="embedlib-airflow-"))
os.environ.update({
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
})


@pytest.fixture(scope="session", autouse=True)
def _remove_airflow_home():
    yield
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """`airflow db migrate` on the temporary sqlite DB; its path."""
    airflow = Path(sys.executable).with_name("airflow")
    proc = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return AIRFLOW_HOME / "airflow.db"
