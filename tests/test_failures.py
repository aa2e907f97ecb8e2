"""Failure-proofing: a job killed mid-publish, injected task failures, bad input end to end."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from embedlib.alignment import TodayAndParent, stabilize
from embedlib.config import StabilizeConfig
from tests.helpers import REPO, error_lines, job, write_vectors

D1, D2 = "2024-04-01", "2024-04-02"


def versions(warehouse):
    out = subprocess.run(job("show_versions", warehouse) + ["--json"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    # Quiet by default: only the project's own progress lines (and the JVM's one notice).
    noise = [line for line in out.stderr.splitlines() if line.strip() and " [embedlib" not in line
             and not line.startswith("WARNING: Using incubator modules")]
    assert not noise, noise
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_sigkill_during_publish_leaves_registered_versions_intact(tmp_path, rng):
    wh = tmp_path / "wh"
    x = rng.normal(size=(200, 8))
    v1 = write_vectors(tmp_path / "v1.parquet", x)
    v2 = write_vectors(tmp_path / "v2.parquet", x @ np.linalg.qr(rng.normal(size=(8, 8)))[0])
    stab = ["stabilize.mode=align"]
    first = subprocess.run(job("stabilize", wh, *stab, f"stabilize.items.path={v1}") + ["--dt", D1],
                           capture_output=True, text=True, cwd=REPO)
    assert first.returncode == 0, first.stderr[-2000:]
    before = versions(wh)
    proc = subprocess.Popen(job("stabilize", wh, *stab, f"stabilize.items.path={v2}") + ["--dt", D2],
                            stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)
    killed = False
    for line in proc.stderr:
        if f"embeddings_item dt={D2}" in line and "wrote" in line:  # data written, not registered
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
    proc.wait()
    assert killed and proc.returncode == -signal.SIGKILL
    after = versions(wh)
    assert after == before and [v["dt"] for v in after] == [D1]
    assert after[0]["rows_read"] == after[0]["rows"] == 200
    rerun = subprocess.run(job("stabilize", wh, *stab, f"stabilize.items.path={v2}") + ["--dt", D2],
                           capture_output=True, text=True, cwd=REPO)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    # The killed job's lease of D2 (its process is gone) was broken, with a warning.
    broke = [line for line in rerun.stderr.splitlines() if "broke the stale lease" in line]
    assert len(broke) == 1 and f"dt={D2}.lease of job 'stabilize {D2}', pid {proc.pid} on " in broke[0], broke
    final = versions(wh)
    assert [(v["dt"], v["parent_dt"]) for v in final] == [(D1, None), (D2, D1)]
    assert final[1]["cos_stab"] > 0.999 and final[0] == before[0]


def flaky(df):
    """The same rows, but the first attempt of partition 0 of every stage fails."""
    def fail_first_attempt(batches):
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if ctx.attemptNumber() == 0 and ctx.partitionId() == 0:
            raise RuntimeError("injected task failure")
        yield from batches

    return df.mapInArrow(fail_first_attempt, df.schema)


def test_injected_task_failures_give_the_clean_result(spark, tmp_path, rng):
    x, y = rng.normal(size=(300, 6)), rng.normal(size=(300, 6))
    read = lambda p: spark.read.parquet(p).repartition(3)  # noqa: E731
    t = read(write_vectors(tmp_path / "t.parquet", x))
    prev = read(write_vectors(tmp_path / "p.parquet", y))
    cfg = StabilizeConfig(mode="align")
    clean = stabilize(TodayAndParent("items", t, prev), None, cfg, 6)
    noisy = stabilize(TodayAndParent("items", flaky(t), flaky(prev)), None, cfg, 6)
    np.testing.assert_allclose(noisy.transform_items, clean.transform_items, atol=1e-12)
    # The churn's most-changed list (ids and neighbour lists) must match exactly, the figures within float noise.
    assert noisy.metrics.pop("most_changed") == clean.metrics.pop("most_changed")
    assert noisy.metrics == pytest.approx(clean.metrics)
    rows = lambda r: sorted((a.id, tuple(a.vector)) for a in r.published().collect())  # noqa: E731
    assert rows(noisy) == rows(clean)


@pytest.mark.parametrize("lines, message", [
    ([], "the input log has no rows"),
    (["u1,,1704888000,view", ",a,1704888000,view", "u2,b,garbage,view"], "no valid events for dt=2024-01-10"),
    (["u1,a,1704888000,view", "u1,a,1704888010,view", "u2,a,1704888000,view", "u2,a,1704888100,view"],
     "no sequence of at least 2 items"),
])
def test_bad_input_through_the_pipeline_registers_nothing(spark, cfg_factory, tmp_path, lines, message):
    from embedlib import pipeline, registry, tables
    from embedlib.sequences import SequenceInputError

    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "events.csv").write_text("\n".join(["user_id,item_id,ts,event_type", *lines]) + "\n")
    cfg = cfg_factory(input={"path": str(tmp_path / "log")}, sequences={"lookback_days": 1, "min_count": 1})
    with pytest.raises(SequenceInputError, match=message):
        pipeline.run_dt(spark, cfg, "2024-01-10")
    assert registry.registered_dts(spark, cfg) == []
    assert tables.list_partitions(spark, tables.table_name(cfg.tables, "sequences")) == []


@pytest.mark.slow
def test_second_job_on_a_locked_metastore_fails_at_once(tmp_path):
    wh = tmp_path / "wh"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from embedlib.spark import lock_metastore; "
         "lock_metastore(sys.argv[1], 'stabilize 2024-04-01'); print('locked', flush=True); time.sleep(120)",
         str(wh / "metastore_db")], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        out = subprocess.run(job("build_sequences", wh) + ["--dt", D1], capture_output=True, text=True, cwd=REPO)
        assert out.returncode == 2
        (line,) = error_lines(out.stderr)
        holder_text = f"is in use by another job ('stabilize 2024-04-01', pid {holder.pid}"
        assert f"metastore {wh / 'metastore_db'} {holder_text}" in line
        assert "spark.metastore_dir" in line and "spark 4" not in out.stderr  # before Spark started
    finally:
        holder.kill()
        holder.wait()
    # The OS released the killed holder's lock: the next job gets past it (and fails on input).
    out = subprocess.run(job("build_sequences", wh, f"input.path={tmp_path / 'none'}") + ["--dt", D1],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2 and "is in use" not in out.stderr


@pytest.mark.slow
def test_a_failed_step_prints_one_error_line_and_leaves_no_temp_folders(tmp_path):
    import glob

    hive_resources = set(glob.glob("/tmp/*_resources"))
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "e.csv").write_text("user_id,item_id,ts,event_type\n")
    (tmp_path / "tmp").mkdir()
    out = subprocess.run(job("build_sequences", tmp_path / "wh", f"input.path={tmp_path / 'log'}") + ["--dt", D1],
                         capture_output=True, text=True, cwd=REPO, env={**os.environ, "TMPDIR": str(tmp_path / "tmp")})
    assert out.returncode == 2
    (line,) = error_lines(out.stderr)
    assert "SequenceInputError: the input log has no rows" in line
    assert list((tmp_path / "tmp").iterdir()) == []  # the job's scratch folder is gone
    assert set(glob.glob("/tmp/*_resources")) <= hive_resources  # and Hive made none in /tmp
