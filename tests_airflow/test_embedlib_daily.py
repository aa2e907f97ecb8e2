"""dags/embedlib_daily.py with real Airflow: it loads, its shape and settings, and one real run."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import jinja2
import pendulum
import pyarrow.parquet as pq
import pytest
import yaml
from airflow.dag_processing.dagbag import DagBag
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.serialization.encoders import coerce_to_core_timetable
from airflow.timetables.base import TimeRestriction
from conftest import DAGS, PIPELINE_VENV, REPO

DAG_ID = "embedlib_daily"
# Written out here on purpose: the DAG reads embedlib/steps/order.py, and the pipeline's
# tests check that run_pipeline follows the same file (tests/test_pipeline_backfill.py).
STEPS = ["build_sequences", "train_item2vec", "stabilize", "build_neighbors", "forward_hit_rate", "report"]
DT = "2024-01-10"
DIM = 16  # train.vector_size of the real run


def load_dag():
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


def test_dagbag_loads_with_no_import_errors():
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert DAG_ID in bag.dags


def test_one_spark_submit_task_per_step_in_pipeline_order():
    dag = load_dag()
    assert sorted(dag.task_ids) == sorted(STEPS)
    assert [t.task_id for t in dag.roots] == ["build_sequences"]
    for upstream, downstream in zip(STEPS, STEPS[1:]):
        assert dag.get_task(upstream).downstream_task_ids == {downstream}
    assert dag.get_task(STEPS[-1]).downstream_task_ids == set()
    for step in STEPS:
        task = dag.get_task(step)
        assert isinstance(task, SparkSubmitOperator)
        assert task.application.endswith(f"/jobs/{step}.py")
        assert task.application_args[2:] == ["--dt", "{{ ds }}"]


def test_versions_chain_one_day_at_a_time():
    dag = load_dag()
    assert dag.max_active_runs == 1 and dag.catchup is True
    for task in dag.tasks:
        # Sequences and training read only the log; publishing waits for the day before.
        assert task.depends_on_past is (task.task_id not in STEPS[:2])
        assert task.pool == "default_pool"
        assert task.retries == 2 and task.retry_delay.total_seconds() == 600
    # The run for day D starts once D is over, and its ds is D.
    first = coerce_to_core_timetable(dag.timetable).next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=dag.start_date, latest=None, catchup=True))
    assert first.logical_date == pendulum.datetime(2024, 1, 8, tz="UTC")
    assert first.run_after == pendulum.datetime(2024, 1, 9, tz="UTC")


def test_a_parallel_backfill_trains_days_at_once_in_a_pool(monkeypatch):
    monkeypatch.setenv("EMBEDLIB_MAX_ACTIVE_RUNS", "2")
    monkeypatch.setenv("EMBEDLIB_TRAIN_POOL", "embedlib_train")
    dag = load_dag()
    assert dag.max_active_runs == 2
    assert {t.task_id: t.pool for t in dag.tasks} == {
        step: "embedlib_train" if step in STEPS[:2] else "default_pool" for step in STEPS}
    assert [t.task_id for t in dag.tasks if t.depends_on_past] == STEPS[2:]


def render(template: str, variables: dict) -> str:
    """A field as Airflow renders it, with ``variables`` as the Airflow Variables."""
    return jinja2.Template(template).render(var={"value": variables}, ds=DT)


def test_paths_come_from_airflow_variables_with_defaults_under_home():
    task = load_dag().get_task("stabilize")
    assert render(task.application, {}) == f"{REPO}/jobs/stabilize.py"
    assert task.application_args[0] == "--conf"
    assert render(task.application_args[1], {}) == f"{REPO}/conf/local.yaml"
    assert render(task.py_files, {}) == f"{REPO}/dist/embedlib.zip"
    home = {"embedlib_home": "/opt/embedlib"}
    assert render(task.application, home) == "/opt/embedlib/jobs/stabilize.py"
    assert render(task.application_args[1], home) == "/opt/embedlib/conf/local.yaml"
    assert render(task.py_files, home) == "/opt/embedlib/dist/embedlib.zip"
    assert render(task.application_args[1], {**home, "embedlib_conf": "/etc/e.yaml"}) == "/etc/e.yaml"
    assert render(task.py_files, {"embedlib_py_files": "/srv/e.zip"}) == "/srv/e.zip"
    assert render(task.name, {}) == f"embedlib-stabilize-{DT}"


@pytest.fixture
def pipeline_env(tmp_path, monkeypatch) -> Path:
    """Sample log, package and config for one run; the DAG's settings point at them."""
    python = PIPELINE_VENV / "bin" / "python"
    subprocess.run([str(python), str(REPO / "scripts" / "generate_sample_logs.py"), "--out", str(tmp_path / "sample"),
                    "--n-events", "20000", "--n-users", "300", "--n-items", "300", "--days", "3",
                    "--end-date", DT], check=True, capture_output=True)
    subprocess.run([str(python), str(REPO / "scripts" / "package.py"), "--out", str(tmp_path / "embedlib.zip")],
                   check=True, capture_output=True)
    warehouse = tmp_path / "warehouse"
    cfg = yaml.safe_load((REPO / "conf" / "local.yaml").read_text())
    cfg["spark"].update(master="local[2]", warehouse_dir=str(warehouse), shuffle_partitions=2)
    cfg["input"]["path"] = str(tmp_path / "sample" / "events")
    cfg["sequences"].update(lookback_days=2, min_count=2)
    cfg.setdefault("train", {})["vector_size"] = DIM
    cfg.setdefault("report", {})["out_dir"] = str(tmp_path / "reports")
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    log4j = REPO / "embedlib" / "resources" / "log4j2.properties"
    monkeypatch.setenv("PATH", f"{PIPELINE_VENV / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": "local[2]"}))
    # Airflow Variables given as environment variables.
    monkeypatch.setenv("AIRFLOW_VAR_EMBEDLIB_CONF", str(tmp_path / "pipeline.yaml"))
    monkeypatch.setenv("AIRFLOW_VAR_EMBEDLIB_PY_FILES", str(tmp_path / "embedlib.zip"))
    monkeypatch.setenv("EMBEDLIB_RETRIES", "0")  # a failure shows now, not after a retry delay
    monkeypatch.setenv("EMBEDLIB_SPARK_CONF", json.dumps({
        "spark.pyspark.python": str(python),
        # Spark's own log at error level; derby.log in the temporary folder.
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{log4j} -Dderby.system.home={tmp_path}",
    }))
    return warehouse


@pytest.mark.slow
def test_dag_run_over_the_sample_registers_a_version(airflow_db, pipeline_env):
    dag = load_dag()
    run = dag.test(logical_date=pendulum.parse(DT, tz="UTC"))
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {step: "success" for step in STEPS}
    assert run.state == "success"

    database = pipeline_env / "embedlib.db"
    registry = list((database / "versions" / f"dt={DT}").glob("run=*"))
    assert len(registry) == 1, "one registered version folder for the dt"
    rows = pq.read_table(registry[0]).to_pylist()
    assert sorted(r["side"] for r in rows) == ["context", "item"]
    for row in rows:
        assert row["root"] is True and row["parent_dt"] is None  # the first version
        assert row["dim"] == DIM and row["n_rows"] > 0
        assert Path(row["location"].removeprefix("file:")).is_dir()
    assert list((database / "neighbors" / f"dt={DT}").glob("run=*/*.parquet"))
    assert (pipeline_env.parent / "reports" / DT / "index.html").is_file()  # the report task ran
