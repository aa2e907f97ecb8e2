"""The pipeline's steps in the order a dt goes through them: the one definition that
``embedlib.pipeline`` (run_pipeline, make run) and the Airflow DAG (dags/embedlib_daily.py)
both follow. Each name is also a job, ``jobs/<name>.py``.

Plain Python with no imports: the DAG runs in Airflow's own venv, without pyspark or
embedlib installed, and loads this file by its path.
"""
STEP_NAMES = (
    "build_sequences",   # 1. behaviour log -> sequences, item_stats
    "train_item2vec",    # 2. sequences -> raw item and context vectors
    "stabilize",         # 3 + 4. align to the parent, publish, register the version
    "build_neighbors",   # 5. top-K neighbours table of the published version
    "forward_hit_rate",  # HR@k of the parent version on this dt's transitions
    "report",            # the dt's run report (HTML + JSON)
)
