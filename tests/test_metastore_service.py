"""The pipeline against a Hive metastore service (scripts/metastore.py; the session's
``metastore_service``): a parallel backfill of two dts gives what the embedded metastore
gives one dt after the other; two runs of one dt overlap (one completes, the other exits 2
naming the holder) while a run of another dt completes; the rerun keeps its registry and
run folders right; show_versions reads the registry through the service.

Runs are jobs in processes of their own (one JVM cannot switch metastores), with gensim made
repeatable (one worker, a fixed PYTHONHASHSEED). Each is stopped, with its process group,
when the test fails.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embedlib.sample_data import SampleSpec, write_sample
from tests.helpers import (
    REPO,
    assert_close,
    assert_same_versions,
    error_lines,
    finish,
    job,
    outcome,
    pipeline_sets,
    start_group,
    tables_of,
)

EARLY, DTS = "2024-01-08", ("2024-01-09", "2024-01-10")
SCRIPT = [sys.executable, str(REPO / "scripts" / "metastore.py")]


def start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    cwd.mkdir(exist_ok=True)
    return start_group(cmd, cwd, {**os.environ, "PYTHONHASHSEED": "0"})


def pipeline(workdir: Path, sample: Path, *args: str, uri: str | None = None) -> list[str]:
    """jobs/run_pipeline.py, small, on the warehouse of ``workdir``; on the service ``uri``."""
    sets = [*pipeline_sets(workdir, sample), f"train.corpus_dir={workdir / 'corpus'}",
            "spark.shuffle_partitions=2", *([f"spark.hive_metastore_uris={uri}"] if uri else [])]
    return [*job("run_pipeline", workdir / "warehouse", *sets), *args]


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sample")
    write_sample(SampleSpec(n_events=8000, n_users=150, n_items=120, n_clusters=4, days=3, end_date=DTS[-1]),
                 folder)
    return folder


@pytest.fixture(scope="module")
def backfills(metastore_service, sample, tmp_path_factory):
    """(service workdir, its run, embedded run) of DTS: --parallel 2 on the service, one dt
    after the other on an embedded metastore; both at once."""
    root = tmp_path_factory.mktemp("backfills")
    span = ("--from", DTS[0], "--to", DTS[-1])
    service = start(pipeline(root / "service", sample, *span, "--parallel", "2", uri=metastore_service),
                    root / "service")
    embedded = start(pipeline(root / "embedded", sample, *span), root / "embedded")
    try:
        service_done = finish(service, 900)
    finally:
        embedded_done = finish(embedded, 900)
    return root / "service", service_done, embedded_done


def test_the_script_starts_one_service_and_stops_its_whole_process_group(tmp_path):
    started = subprocess.run([*SCRIPT, "start", "--dir", str(tmp_path), "--timeout", "540"], capture_output=True,
                             text=True, timeout=600)
    assert started.returncode == 0, started.stderr
    uri, pid = started.stdout.strip(), json.loads((tmp_path / "metastore.json").read_text())["pid"]
    try:
        assert uri.startswith("thrift://127.0.0.1:")
        again = subprocess.run([*SCRIPT, "start", "--dir", str(tmp_path)], capture_output=True, text=True)
        status = subprocess.run([*SCRIPT, "status", "--dir", str(tmp_path)], capture_output=True, text=True)
        assert again.stdout.strip() == status.stdout.strip() == uri  # one service per folder
        assert (tmp_path / "derby" / "service.properties").is_file()  # its own Derby database
    finally:
        stopped = subprocess.run([*SCRIPT, "stop", "--dir", str(tmp_path)], timeout=120)
    assert stopped.returncode == 0
    with pytest.raises(ProcessLookupError):  # no process of its group is left
        os.killpg(pid, 0)
    status = subprocess.run([*SCRIPT, "status", "--dir", str(tmp_path)], capture_output=True, text=True)
    assert status.returncode == 1 and status.stdout.strip() == "not running"


def test_parallel_backfill_is_refused_on_the_embedded_metastore(tmp_path, sample):
    proc = subprocess.run(pipeline(tmp_path, sample, "--from", DTS[0], "--to", DTS[-1], "--parallel", "2"),
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, outcome(proc)
    assert error_lines(proc.stderr) == [next(line for line in proc.stderr.splitlines() if " ERROR " in line)]
    assert "BackfillError: --parallel 2 needs a Hive metastore service (spark.hive_metastore_uris)" in proc.stderr
    assert not (tmp_path / "warehouse").exists()  # refused before Spark started


@pytest.mark.slow
def test_parallel_backfill_on_the_service_matches_embedded_sequential(backfills):
    _, service, embedded = backfills
    assert service.returncode == 0, outcome(service)
    assert embedded.returncode == 0, outcome(embedded)
    versions = assert_same_versions(tables_of(service), tables_of(embedded), DTS)
    assert versions[DTS[1]]["item"]["parent_dt"] == DTS[0]
    # Steps 1-2 of the second dt ran ahead: its lease was taken before the first dt registered.
    log = service.stderr.splitlines()
    taken = next(i for i, line in enumerate(log) if f"lease of embedlib dt={DTS[1]} taken" in line)
    registered = next(i for i, line in enumerate(log) if f"wrote embedlib.versions dt={DTS[0]}" in line)
    assert taken < registered


@pytest.mark.slow
def test_overlapping_runs_on_the_service(backfills, metastore_service, sample):
    """A rerun of DTS[1] and a run of EARLY at once: both complete and register; a second
    run of DTS[1] meanwhile exits 2 at once, naming the first. Then show_versions."""
    workdir, first, _ = backfills
    assert first.returncode == 0, outcome(first)
    lease = workdir / "warehouse" / "embedlib.db" / "_leases" / f"dt={DTS[1]}.lease"
    rerun = start(pipeline(workdir, sample, "--dt", DTS[1], uri=metastore_service), workdir)
    other_dt = start(pipeline(workdir, sample, "--dt", EARLY, uri=metastore_service), workdir)
    try:
        deadline = time.monotonic() + 300
        while not lease.exists() and rerun.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        second = finish(start(pipeline(workdir, sample, "--dt", DTS[1], uri=metastore_service), workdir), 600)
    finally:
        rerun_done, other_done = finish(rerun, 900), finish(other_dt, 900)
    assert rerun_done.returncode == 0 and other_done.returncode == 0, outcome(rerun_done) + outcome(other_done)
    assert second.returncode == 2, outcome(second)
    errors = error_lines(second.stderr)
    assert len(errors) == 1 and f"LeaseHeldError: dt={DTS[1]} of database embedlib is being written by another " \
                                f"run (job 'run_pipeline', pid {rerun.pid} on " in errors[0], errors
    assert "wrote embedlib" not in second.stderr  # stopped before writing anything
    assert not lease.exists() and not list(lease.parent.iterdir())  # every lease given back

    # The rerun replaced DTS[1]: the same version in a new run folder.
    before, after = ({r["side"]: r for r in tables_of(run)["versions", DTS[1]]} for run in (first, rerun_done))
    assert sorted(before) == sorted(after) == ["context", "item"]
    for side, row in before.items():
        for key in ("n_rows", "parent_dt", "fingerprint"):
            assert after[side][key] == row[key], (side, key)
        assert_close(json.loads(after[side]["metrics_json"]), json.loads(row["metrics_json"]), side)
        assert after[side]["location"] != row["location"]
    # Retention: the replaced run folder is kept until the next registration of the dt.
    runs = (workdir / "warehouse" / "embedlib.db" / "embeddings_item" / f"dt={DTS[1]}").iterdir()
    assert sorted(f"file:{run}" for run in runs) == sorted([before["item"]["location"], after["item"]["location"]])
    shown = subprocess.run(
        [*job("show_versions", workdir / "warehouse", f"spark.hive_metastore_uris={metastore_service}"), "--json"],
        capture_output=True, text=True, cwd=workdir, timeout=300)
    assert shown.returncode == 0, outcome(shown)
    rows = json.loads(shown.stdout.strip().splitlines()[-1])
    assert [(r["dt"], r["side"], r["problem"]) for r in rows] == [
        (dt, side, None) for dt in (EARLY, *DTS) for side in ("context", "item")]
    assert [r["parent_dt"] for r in rows if r["side"] == "item"] == [None, None, DTS[0]]
