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
