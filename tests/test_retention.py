"""Retention: interrupted reruns of a published dt never delete what the registry points at.

An interruption is injected in-process at each point of a stabilize rerun: after the new
data is staged but before the swap ("staged"), after the item table's swap ("swapped"), and
just before the registry write ("unregistered"). The interruptions are chained so that every
ordered pair of points happens in a row (and runs of three), with the orphan grace period
at 0 (the harshest setting). At every interruption a reader resolves the registered
versions and must read them back complete.
"""
import glob
import itertools
import os

import numpy as np
import pytest

from embedlib import registry, tables
from embedlib.steps import stabilize as step
from tests.helpers import write_vectors

D1, D2 = "2024-05-01", "2024-05-02"
POINTS = ("staged", "swapped", "unregistered")


def run_name(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1]


class Interrupted(Exception):
    """Stands for a SIGTERM / pre-emption at one point of the rerun."""


def read_every_version(spark, cfg) -> dict:
    """{(dt, side): rows} of every registered version, each checked against the registry."""
    out = {}
    for dt in registry.registered_dts(spark, cfg):
        for side in registry.read_version(spark, cfg, dt):
            df, record = registry.read_published(spark, cfg, dt, side)
            out[(dt, side)] = df.count()
            assert out[(dt, side)] == record.n_rows
    return out


def interrupt_at(monkeypatch, spark, cfg, point, expected):
    """Make the next stabilize run stop at ``point``; the reader runs there first."""
    item_table = tables.embeddings_table(cfg.tables, "item")
    real_write, real_register = tables.write_partition, registry.register

    def reader_then_stop():
        assert read_every_version(spark, cfg) == expected
        raise Interrupted(point)

    def write(spark_, df, table, dt, **kw):
        if table == item_table and point == "staged":
            df.write.parquet(f"{tables.table_location(spark_, table)}/dt={dt}/run={tables._run_id()}")
            reader_then_stop()
        location = real_write(spark_, df, table, dt, **kw)
        if table == item_table and point == "swapped":
            reader_then_stop()
        return location

    def register(*args, **kw):
        if point == "unregistered":
            reader_then_stop()
        return real_register(*args, **kw)

    monkeypatch.setattr(tables, "write_partition", write)
    monkeypatch.setattr(registry, "register", register)


def chain_covering_all_pairs() -> list[str]:
    """A sequence of points in which every ordered pair occurs consecutively (de Bruijn)."""
    seq = ["staged", "staged", "swapped", "staged", "unregistered", "swapped", "swapped",
           "unregistered", "unregistered", "staged"]
    pairs = set(zip(seq, seq[1:]))
    assert pairs == set(itertools.product(POINTS, repeat=2))
    return seq


@pytest.mark.slow
def test_interrupted_reruns_never_lose_a_registered_version(spark, cfg_factory, tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 4))
    cfg = cfg_factory(stabilize={"mode": "align", "items": {"path": write_vectors(tmp_path / "1.parquet", x)}},
                      tables={"keep_orphan_runs_hours": 0})
    step.run(spark, cfg, D1)
    cfg.stabilize.items.path = write_vectors(tmp_path / "2.parquet", x + 0.01)
    step.run(spark, cfg, D2)
    expected = read_every_version(spark, cfg)
    assert expected == {(D1, "item"): 40, (D2, "item"): 40}
    registered = registry.registered_locations(spark, cfg, D2)["item"]

    for point in chain_covering_all_pairs():
        with monkeypatch.context() as m:
            interrupt_at(m, spark, cfg, point, expected)
            with pytest.raises(Interrupted):
                step.run(spark, cfg, D2)
        assert read_every_version(spark, cfg) == expected, point
        assert registry.registered_locations(spark, cfg, D2)["item"] == registered

    step.run(spark, cfg, D2)  # the rerun that completes
    assert read_every_version(spark, cfg) == expected
    new_location = registry.registered_locations(spark, cfg, D2)["item"]
    runs = run_folders(spark, cfg, D2)
    # Left: the new version, and the one it replaced (readers that resolved it just before).
    assert runs == sorted(run_name(loc) for loc in (registered, new_location))


def run_folders(spark, cfg, dt) -> list[str]:
    root = tables.table_location(spark, tables.embeddings_table(cfg.tables, "item"))
    fs, path = tables.hadoop_fs(spark, f"{root}/dt={dt}")
    return sorted(s.getPath().getName() for s in fs.listStatus(path))


def test_orphan_runs_wait_for_the_grace_period(spark, cfg_factory):
    table = tables.qualified(cfg_factory().tables, "t")
    df = spark.createDataFrame([("a", [1.0])], "id string, vector array<float>")
    first = tables.write_partition(spark, df, table, "2024-01-01")
    staged = f"{tables.table_location(spark, table)}/dt=2024-01-01/run=20240101T000000-deadbeef"
    df.write.parquet(staged)  # an interrupted writer's staging folder, days old by its name
    second = tables.write_partition(spark, df, table, "2024-01-01", grace_hours=1e9)
    names = lambda: sorted(run_name(p) for p in (first, second, staged)  # noqa: E731
                           if tables.path_exists(spark, p))
    assert names() == sorted(run_name(p) for p in (first, second, staged))
    third = tables.write_partition(spark, df, table, "2024-01-01", keep=[first], grace_hours=0)
    # Kept: the folder in `keep`, the one just replaced (second), the new one; not the orphan.
    assert not tables.path_exists(spark, staged)
    assert all(tables.path_exists(spark, p) for p in (first, second, third))


def test_a_partition_whose_location_is_its_dt_folder_keeps_every_file(spark, cfg_factory):
    table = tables.qualified(cfg_factory().tables, "t_dt_folder")
    df = spark.createDataFrame([("a", [1.0]), ("b", [2.0])], "id string, vector array<float>")
    tables.write_partition(spark, df, table, "2024-01-01")  # the table, as the pipeline makes it
    dt_folder = f"{tables.table_location(spark, table)}/dt=2024-01-02"
    df.write.parquet(dt_folder)  # written by another tool: the data sits in the dt folder
    spark.sql(f"ALTER TABLE {table} ADD PARTITION (dt='2024-01-02') LOCATION '{dt_folder}'")
    files = sorted(glob.glob(dt_folder.removeprefix("file:") + "/*"))
    assert any(f.endswith(".parquet") for f in files)
    assert tables.remove_orphan_runs(spark, table, "2024-01-02", keep=[]) == []
    assert tables.read_partition(spark, table, "2024-01-02").count() == 2
    rerun = tables.write_partition(spark, df.limit(1), table, "2024-01-02")  # replaces it
    assert tables.read_partition(spark, table, "2024-01-02").count() == 1
    assert rerun.startswith(dt_folder)
    assert all(os.path.exists(f) for f in files)  # the replaced partition's files are kept
