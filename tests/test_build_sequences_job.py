"""Step 1 end to end: sample log and MovieLens through the table layer, reruns, --help."""
import subprocess
import sys

import pytest
from pyspark.sql import functions as F

from embedlib import tables
from embedlib.config import load_config
from embedlib.sample_data import SampleSpec, write_sample
from embedlib.steps import build_sequences
from tests.helpers import MOVIELENS, REPO


def snapshot(spark, table, dt):
    df = tables.read_partition(spark, table, dt)
    return sorted(tuple(r) for r in df.collect())


@pytest.mark.slow
def test_sample_log_rerun_gives_identical_tables(spark, cfg_factory, tmp_path):
    write_sample(SampleSpec(n_events=20000, n_users=300, n_items=400, n_clusters=8, days=3), tmp_path)
    cfg = cfg_factory(input={"path": str(tmp_path / "events"), "event_types": ["view", "click", "purchase"],
                             "columns": {"event_type": "event_type"}},
                      sequences={"lookback_days": 2, "min_count": 2})
    first = build_sequences.run(spark, cfg, "2024-01-10")
    seq_table = first["sequences_table"]
    before = snapshot(spark, seq_table, "2024-01-10"), snapshot(spark, first["item_stats_table"], "2024-01-10")
    second = build_sequences.run(spark, cfg, "2024-01-10")
    after = snapshot(spark, seq_table, "2024-01-10"), snapshot(spark, first["item_stats_table"], "2024-01-10")
    assert before == after
    assert first["dropped"] == second["dropped"]
    assert first["dropped"]["null_user"] > 0 and first["dropped"]["duplicate"] > 0
    seq_df = tables.read_partition(spark, seq_table, "2024-01-10")
    assert seq_df.count() == first["sequences"]["written"]
    assert seq_df.agg(F.min("n_items"), F.max("n_items")).first() == (2, 50)
    assert seq_df.columns == ["user_id", "session_id", "items", "n_items", "start_ts", "end_ts"]


@pytest.mark.slow
@pytest.mark.skipif(not MOVIELENS.exists(), reason="../shared/data/movielens-latest-small is absent")
def test_movielens_by_config_alone(spark, cfg_factory):
    db = cfg_factory().tables.database
    cfg = load_config(REPO / "conf" / "movielens.yaml",
                      [f"tables.database={db}", f"input.path={MOVIELENS / 'ratings.csv'}"])
    summary = build_sequences.run(spark, cfg, "2018-09-24")
    assert summary["input_rows"] == 100836
    assert sum(summary["dropped"].values()) == 0
    assert summary["items"]["seen"] == 9724  # movies rated by anyone
    assert summary["sequences"]["tokens"] > 90000


@pytest.mark.parametrize("job", ["build_sequences", "run_pipeline"])
def test_job_help_explains_flags(job):
    out = subprocess.run([sys.executable, str(REPO / "jobs" / f"{job}.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--conf" in out and "--set" in out and "--dt" in out


def test_bad_dt_is_rejected_before_spark_starts():
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "build_sequences.py"),
                           "--conf", "conf/local.yaml", "--dt", "2024-02-30"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "--dt must be a date like" in proc.stderr
