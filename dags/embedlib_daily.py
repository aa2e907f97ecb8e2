"""embedlib_daily: the daily pipeline as spark-submit tasks, one dt per DAG run.

The same steps, in the same order, as run_pipeline (and make run), from their one
definition in embedlib/steps/order.py: build_sequences >> train_item2vec >> stabilize >>
build_neighbors >> forward_hit_rate >> report. Each is one SparkSubmitOperator running the
step's job file with ``--conf <config> --dt {{ ds }}`` and the embedlib package
(``make package``) as ``--py-files``.

The schedule is a data interval per UTC day: the run for dt D starts once D is over, and
``{{ ds }}`` is D. ``catchup=True`` with ``max_active_runs=1`` (the default) makes a backfill
(or a late start) run the days one at a time in date order. stabilize and the steps after it
have ``depends_on_past=True``: each waits for the same task of the day before, so every
version is stabilized against the one published the day before, and a failed day stops the
later days' publishing until it is fixed and cleared. build_sequences and train_item2vec
read only the log, so they do not wait for the day before: with EMBEDLIB_MAX_ACTIVE_RUNS=N
(on a Hive metastore service only: the embedded one serves one job at a time) a backfill
trains up to N days at once, in the pool EMBEDLIB_TRAIN_POOL, and stabilizes them in order.

Where things are: Airflow Variables, read when a task runs (set in the UI, with
`airflow variables set`, or as AIRFLOW_VAR_<NAME> environment variables):
  embedlib_home      folder with jobs/ and conf/ (default: the parent of this dags/ folder)
  embedlib_conf      config file (default <home>/conf/local.yaml); use absolute paths in it,
                     the worker's working folder is not known
  embedlib_py_files  --py-files (default <home>/dist/embedlib.zip, from `make package`)
How the DAG is built (environment of the scheduler and workers, read when the file is parsed):
  EMBEDLIB_SPARK_CONN_ID  Airflow connection with the master (default spark_default)
  EMBEDLIB_SPARK_CONF     JSON object of extra --conf settings, e.g.
                          {"spark.pyspark.python": "/opt/embedlib/venv/bin/python"}
  EMBEDLIB_START_DATE     first dt of the schedule, YYYY-MM-DD (default 2024-01-08)
  EMBEDLIB_RETRIES        retries of each task (default 2, ten minutes apart)
  EMBEDLIB_MAX_ACTIVE_RUNS  days run at once (default 1; more needs spark.hive_metastore_uris)
  EMBEDLIB_TRAIN_POOL     Airflow pool of build_sequences and train_item2vec (default
                          default_pool), e.g. a pool of 2 slots to train 2 days at once
"""
from __future__ import annotations

import importlib.util
import json
import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, CronDataIntervalTimetable

DAG_ID = "embedlib_daily"
REPO = Path(__file__).resolve().parents[1]


def step_names(home: Path = REPO) -> tuple:
    """The step list of embedlib/steps/order.py, loaded by path: Airflow's venv has no
    embedlib (nor pyspark) to import it from."""
    spec = importlib.util.spec_from_file_location("embedlib_step_order", home / "embedlib" / "steps" / "order.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(module.STEP_NAMES)


STEPS = step_names()
# Steps that read only the log (as embedlib.pipeline.AHEAD_STEPS): they may run ahead of the
# day before; the others wait for it (depends_on_past).
AHEAD_STEPS = STEPS[:2]


def variable(name: str, default_expr: str) -> str:
    """Jinja expression: Airflow Variable ``name``, else the Jinja expression ``default_expr``.

    Rendered when a task runs, not read with Variable.get() here: the scheduler parses this
    file often and must not query the metadata DB each time.
    """
    return f"var.value.get({json.dumps(name)}, {default_expr})"


HOME = variable("embedlib_home", json.dumps(str(REPO)))
CONF_FILE = "{{ %s }}" % variable("embedlib_conf", f"{HOME} ~ '/conf/local.yaml'")
PY_FILES = "{{ %s }}" % variable("embedlib_py_files", f"{HOME} ~ '/dist/embedlib.zip'")

default_args = {
    "owner": "embedlib",
    "depends_on_past": True,
    "retries": int(os.environ.get("EMBEDLIB_RETRIES", "2")),
    "retry_delay": timedelta(minutes=10),
}

with DAG(
    dag_id=DAG_ID,
    description="Item2Vec embeddings: sequences, training, stabilized publish, neighbours, evaluation, report",
    # Interval semantics: the run for the day [D, D+1) starts after it and has ds = D.
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.parse(os.environ.get("EMBEDLIB_START_DATE", "2024-01-08"), tz="UTC"),
    catchup=True,
    max_active_runs=int(os.environ.get("EMBEDLIB_MAX_ACTIVE_RUNS", "1")),
    default_args=default_args,
    tags=["embedlib", "spark"],
    doc_md=__doc__,
) as dag:
    previous = None
    for step_name in STEPS:
        task = SparkSubmitOperator(
            task_id=step_name,
            conn_id=os.environ.get("EMBEDLIB_SPARK_CONN_ID", "spark_default"),
            application="{{ %s }}/jobs/%s.py" % (HOME, step_name),
            application_args=["--conf", CONF_FILE, "--dt", "{{ ds }}"],
            py_files=PY_FILES,
            conf=json.loads(os.environ.get("EMBEDLIB_SPARK_CONF", "{}")),
            name=f"embedlib-{step_name}-{{{{ ds }}}}",
            depends_on_past=step_name not in AHEAD_STEPS,
            pool=os.environ.get("EMBEDLIB_TRAIN_POOL", "default_pool") if step_name in AHEAD_STEPS else "default_pool",
        )
        if previous is not None:
            previous >> task
        previous = task
