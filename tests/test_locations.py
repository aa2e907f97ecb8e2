"""Paths with a space and a percent sign: one reading of locations (embedlib/locations.py) for
the pipeline, the manifests and the service, and Java options that Spark does not split."""
import os
import subprocess
import sys

import pyarrow.fs as pafs
import pytest
from fastapi.testclient import TestClient

from embedlib import locations
from embedlib.config import SparkConfig
from embedlib.sample_data import SampleSpec, write_sample
from embedlib.spark import spark_conf
from tests.helpers import PIPELINE_SETS, REPO, outcome

DT = "2024-01-10"


def test_locations_are_read_one_way():
    for location in ("file:/data/my data 100%/x", "file:///data/my data 100%/x", "/data/my data 100%/x"):
        fs, path = locations.filesystem(location)
        assert isinstance(fs, pafs.LocalFileSystem) and path == "/data/my data 100%/x", location
    assert locations.filesystem("file:/data/a b/%20")[1] == "/data/a b/%20"  # not percent-decoded
    for location in ("foo://host/x", "relative/x", "file:relative"):
        assert locations.filesystem(location) is None, location
    # Spark's inputFiles() are URIs (percent-encoded): from_uri gives the location back
    assert locations.from_uri("file:///data/my%20data%20100%25/x") == "file:/data/my data 100%/x"
    assert locations.from_uri("hdfs://nn:8020/a%20b") == "hdfs://nn:8020/a b"
    assert locations.absolute("rel dir") == os.path.join(os.getcwd(), "rel dir")
    assert locations.is_hidden("_SUCCESS") and locations.is_hidden(".x.crc") and not locations.is_hidden("dt=1")


def test_a_filesystem_pyarrow_cannot_open_is_logged_with_the_reason(caplog, monkeypatch):
    import logging

    monkeypatch.setattr(logging.getLogger("embedlib"), "propagate", True)
    said = lambda: [r.message for r in caplog.records if "s3a://bucket-x" in r.message]  # noqa: E731
    with caplog.at_level("WARNING", logger="embedlib.locations"):
        assert locations.filesystem("s3a://bucket-x/key") is None
        first = said()
        assert locations.filesystem("s3a://bucket-x/other") is None
    assert first and said() == first  # once per scheme and authority
    assert "pyarrow cannot open s3a://bucket-x (ArrowInvalid: " in first[0]


def test_java_options_are_quoted(tmp_path):
    cfg = SparkConfig(warehouse_dir=str(tmp_path / "my data 100%" / "wh"))
    options = spark_conf(cfg)["spark.driver.extraJavaOptions"]
    assert f'"-Dderby.system.home={tmp_path}/my data 100%/wh"' in options


@pytest.mark.slow
def test_a_pipeline_run_and_the_service_under_a_folder_with_a_space_and_a_percent(tmp_path):
    """make run as a new user would: warehouse and input under `my data 100%/`, a plain
    python start (the driver's Java options), then the service from the manifests."""
    from embedlib.serving.startup import ServeSpec, build_app

    home = tmp_path / "my data 100%"
    write_sample(SampleSpec(n_events=6000, n_users=120, n_items=100, n_clusters=4, days=2, end_date=DT),
                 home / "input")
    sets = [f"spark.warehouse_dir={home / 'wh'}", "spark.master=local[2]", "spark.shuffle_partitions=2",
            f"input.path={home / 'input' / 'events'}", f"report.out_dir={home / 'reports'}", *PIPELINE_SETS]
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "run_pipeline.py"), "--conf",
                           str(REPO / "conf" / "local.yaml"), "--dt", DT,
                           *[arg for item in sets for arg in ("--set", item)]],
                          cwd=home, capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, outcome(proc)
    assert "Could not find or load main class" not in proc.stdout + proc.stderr
    app = build_app(ServeSpec(conf=str(REPO / "conf" / "local.yaml"),
                              overrides=[*sets, "serve.backend=numpy", "serve.batch_wait_ms=0"]))
    client = TestClient(app)
    health = client.get("/health").json()
    assert health["version"] == DT and "my data 100%" in health["location"], health
    some_id = app.state.follower.current.index.ids[0]
    similar = client.get("/similar", params={"id": some_id, "k": 3})
    assert similar.status_code == 200 and len(similar.json()["neighbors"]) == 3


def test_an_attempt_that_ends_after_the_commit_leaves_no_temporary_folder(tmp_path, monkeypatch):
    """A losing speculative attempt of arrow_io.write_parts, run after the driver committed
    the run folder (here called directly, as a task would): it leaves nothing behind."""
    import types

    import pyarrow as pa

    from embedlib import arrow_io

    run_dir = tmp_path / "my data 100%" / "run=1"
    run_dir.mkdir(parents=True)
    (run_dir / "_SUCCESS").write_text("")
    monkeypatch.setattr(arrow_io.TaskContext, "get", staticmethod(lambda: types.SimpleNamespace(partitionId=lambda: 3)))
    batch = pa.RecordBatch.from_pydict({"id": ["a", "b"]})
    out = list(arrow_io._write_task([batch], f"file:{run_dir}", "job1", batch.schema, None, {}))
    assert out == [] and sorted(p.name for p in run_dir.iterdir()) == ["_SUCCESS"]
    # one that started before the commit and finishes after it removes what it wrote
    (run_dir / "_SUCCESS").unlink()

    seen = []

    def commit_meanwhile(b):  # the driver commits while the second batch is written
        seen.append(b)
        if len(seen) == 2:
            assert (run_dir / "_temporary").exists()
            (run_dir / "_SUCCESS").write_text("")
        return b
    out = list(arrow_io._write_task([batch, batch], f"file:{run_dir}", "job1", batch.schema,
                                    commit_meanwhile, {}))
    assert out == [] and sorted(p.name for p in run_dir.iterdir()) == ["_SUCCESS"]


def test_executors_that_cannot_open_the_location_fall_back_to_sparks_writer(spark, cfg_factory, tmp_path,
                                                                            monkeypatch, caplog):
    import logging

    from embedlib import arrow_io, tables

    df = spark.createDataFrame([("a", [1.0]), ("b", [2.0])], "id string, vector array<float>")

    def no_filesystem_here(batch):  # what _write_task raises on a node without libhdfs
        raise RuntimeError(f"{arrow_io.NO_FILESYSTEM_ON_EXECUTOR} 'hdfs://nn/x' on this executor")
    with pytest.raises(arrow_io.ExecutorFilesystemError, match="the executors cannot open"):
        arrow_io.write_parts(df, f"file:{tmp_path}/run", no_filesystem_here)
    assert not (tmp_path / "run").exists()

    def executors_cannot(*args, **kwargs):
        raise arrow_io.ExecutorFilesystemError("the executors cannot open X with pyarrow (the driver can)")
    monkeypatch.setattr(arrow_io, "write_parts", executors_cannot)
    monkeypatch.setattr(logging.getLogger("embedlib"), "propagate", True)
    table = tables.qualified(cfg_factory().tables, "t_fallback")
    with caplog.at_level("WARNING", logger="embedlib.tables"):
        tables.write_partition(spark, df, table, DT, arrow=True)
    assert tables.read_partition(spark, table, DT).count() == 2
    assert "the executors cannot open X with pyarrow (the driver can), so Spark's Parquet writer" in caplog.text
