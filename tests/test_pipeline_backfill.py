"""The pipeline runner: one step list (shared with the DAG); backfills over days without data."""
import pytest

from embedlib import pipeline
from embedlib.sequences import EmptyInputError

DTS = ["2024-02-01", "2024-02-02", "2024-02-03"]


@pytest.fixture
def fake_run_dt(monkeypatch):
    """run_dt that finds no events on the middle day; records the dts it was asked for."""
    calls = []

    def run_dt(spark, cfg, dt):
        calls.append(dt)
        if dt == DTS[1]:
            raise EmptyInputError(f"no valid events for dt={dt} in the 1-day window")
        return {"stabilize": {"parent_dt": calls[-2] if len(calls) > 1 else None}, "report": {"path": f"/r/{dt}"}}

    monkeypatch.setattr(pipeline, "run_dt", run_dt)
    return calls


def test_empty_day_stops_a_backfill_with_advice(fake_run_dt):
    with pytest.raises(EmptyInputError, match=r"no valid events for dt=2024-02-02 .*The backfill stopped at "
                                              r"dt=2024-02-02 after 1 of 3 dts; .*--continue-on-empty, or go on "
                                              r"after it with --from 2024-02-03 --to 2024-02-03"):
        pipeline.run_range(None, None, DTS)
    assert fake_run_dt == DTS[:2]


def test_continue_on_empty_skips_the_day_and_says_so(fake_run_dt):
    results = pipeline.run_range(None, None, DTS, continue_on_empty=True)
    assert fake_run_dt == DTS and "no valid events" in results[DTS[1]]["skipped"]
    rows = pipeline.summary_rows(results)
    assert rows[1] == {"dt": DTS[1], "skipped": "no data"} and rows[2]["dt"] == DTS[2]
    table = pipeline.format_table(rows).splitlines()
    assert "skipped" in table[0] and table[2].split()[0] == DTS[1] and table[2].split()[-1] == "data"


def test_run_pipeline_help_explains_the_flag():
    import subprocess
    import sys

    from tests.helpers import REPO

    out = subprocess.run([sys.executable, str(REPO / "jobs" / "run_pipeline.py"), "--help"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "--continue-on-empty" in out.stdout and "skip a dt" in out.stdout


def test_pipeline_and_dag_follow_one_step_list():
    from embedlib.steps.order import STEP_NAMES
    from tests.helpers import REPO

    assert tuple(pipeline.STEPS) == STEP_NAMES
    assert all((REPO / "jobs" / f"{name}.py").is_file() for name in STEP_NAMES)  # one job per step
    assert "step_names()" in (REPO / "dags" / "embedlib_daily.py").read_text()  # the DAG reads the file


@pytest.fixture
def fake_steps(monkeypatch):
    """run_step and the leases faked (no Spark): the (step, dt) calls in order, the leases held."""
    import threading
    import time

    calls, held, lock = [], [], threading.Lock()

    def run_step(spark, cfg, dt, name):
        with lock:
            calls.append((name, dt))
        if name == "train_item2vec":
            time.sleep(0.2)
        if name == "stabilize" and dt == "2024-02-02" and "fail" in spark.sparkContext.appName:
            raise EmptyInputError("stabilize failed")
        return {"step": name}

    monkeypatch.setattr(pipeline, "run_step", run_step)
    monkeypatch.setattr(pipeline.lease, "acquire", lambda spark, cfg, dt, job: held.append(dt) or dt)
    monkeypatch.setattr(pipeline.lease, "release", lambda spark, taken: held.remove(taken))
    return calls, held


def fake_run(app: str = "test", uris: str | None = "thrift://127.0.0.1:9083", init: str = "cold"):
    from types import SimpleNamespace as NS

    return NS(sparkContext=NS(appName=app)), NS(spark=NS(hive_metastore_uris=uris), train=NS(init=init))


def test_parallel_backfill_trains_ahead_and_publishes_in_date_order(fake_steps):
    from embedlib.steps.order import STEP_NAMES

    calls, held = fake_steps
    results = pipeline.run_range(*fake_run(), DTS, parallel=2)
    assert list(results) == DTS and all(list(r) == list(STEP_NAMES) for r in results.values())
    assert [dt for name, dt in calls if name == "stabilize"] == DTS
    for dt in DTS:  # every dt's steps in their order
        assert [name for name, d in calls if d == dt] == list(STEP_NAMES)
    # The second dt trained while the first was not yet published.
    assert calls.index(("train_item2vec", DTS[1])) < calls.index(("stabilize", DTS[0]))
    assert held == []  # every lease given back


def test_a_parallel_backfill_that_fails_gives_back_every_lease(fake_steps):
    calls, held = fake_steps
    with pytest.raises(EmptyInputError, match="stabilize failed. The backfill stopped at dt=2024-02-02 after 1 of 3"):
        pipeline.run_range(*fake_run("fail"), DTS, parallel=2)
    assert ("stabilize", DTS[2]) not in calls and held == []


@pytest.mark.parametrize("uris, init, message", [
    (None, "cold", r"--parallel 2 needs a Hive metastore service \(spark.hive_metastore_uris\)"),
    ("thrift://127.0.0.1:9083", "warm", r"--parallel 2 with train.init=warm"),
])
def test_parallel_backfill_is_refused_where_it_cannot_run(fake_steps, uris, init, message):
    with pytest.raises(pipeline.BackfillError, match=message):
        pipeline.run_range(*fake_run(uris=uris, init=init), DTS, parallel=2)
    assert fake_steps[0] == []
