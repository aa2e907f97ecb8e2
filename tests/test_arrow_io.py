"""Vector I/O by pyarrow (embedlib/arrow_io.py): the same tables as Spark's writer, each row
once whatever the task attempts, and splits that cover every row once."""
import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from embedlib import arrow_io, tables
from embedlib.config import ConfigError

PUBLISHED = "id string, vector array<float>, count bigint, carried boolean, trained_dt string"


def published_rows(n, dim=3, seed=0):
    """Rows of the published contract, with null counts, a null vector and a null element."""
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    rows = [(f"i{k}", [float(v) for v in x[k]], None if k % 4 == 0 else k, k % 5 == 0, "2024-01-01")
            for k in range(n)]
    rows[1] = ("i1", None, 1, False, "2024-01-01")
    rows[2] = ("i2", [None, 1.0, 2.0][:dim], 2, False, "2024-01-01")
    return rows


def local(location: str) -> Path:
    return Path(arrow_io.filesystem(location)[1])


def data_files(location: str) -> list[str]:
    return sorted(p.name for p in local(location).iterdir() if p.name.startswith("part-"))


def sorted_rows(df):
    return sorted((tuple(r) for r in df.collect()), key=lambda r: r[0])


def times(matrix, nullable=True):
    """A batch_fn: vectors times ``matrix`` (list<item: float> out, the fields not nullable
    unless ``nullable``: types that differ from the table's only in names and nullability)."""
    def fn(batch):
        i = batch.schema.get_field_index("vector")
        column = batch.column(i)
        x = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1) @ matrix
        offsets = pa.array(np.arange(len(column) + 1, dtype=np.int32) * x.shape[1])
        vectors = pa.ListArray.from_arrays(offsets, pa.array(x.ravel().astype(np.float32)))
        out = batch.set_column(i, "vector", vectors)
        if not nullable:
            out = pa.RecordBatch.from_arrays(out.columns, schema=pa.schema(
                [f.with_nullable(False) for f in out.schema]))
        return out
    return fn


@pytest.fixture
def embedlib_log(monkeypatch, caplog):
    """caplog sees embedlib's records (its logger does not propagate by default)."""
    monkeypatch.setattr(logging.getLogger("embedlib"), "propagate", True)
    caplog.set_level(logging.INFO, logger="embedlib")
    return caplog


# ----------------------------------------------------------------------------- locations
def test_filesystem_of_spark_locations(tmp_path):
    for uri in ("file:/data/x", "file:///data/x", "/data/x"):
        fs, path = arrow_io.filesystem(uri)
        assert isinstance(fs, pafs.LocalFileSystem) and path == "/data/x", uri
    # Hadoop's strings are not percent-encoded: a space is a space, %20 three characters.
    assert arrow_io.filesystem("file:/data/a b/%20")[1] == "/data/a b/%20"
    for uri in ("foo://host/x", "s3a://bucket/key", "relative/x", "file:relative"):
        assert arrow_io.filesystem(uri) is None, uri


# ----------------------------------------------------------------------------- writing
def test_write_matches_sparks_writer_through_the_table(spark, cfg_factory):
    db = cfg_factory().tables
    df = spark.createDataFrame(published_rows(40), PUBLISHED).repartition(3)
    by_arrow = tables.write_partition(spark, df, tables.qualified(db, "a"), "2024-01-01", arrow=True)
    by_spark = tables.write_partition(spark, df, tables.qualified(db, "s"), "2024-01-01")
    assert len(data_files(by_arrow)) == 3 and not (local(by_arrow) / "_temporary").exists()
    arrow_df = tables.read_partition(spark, tables.qualified(db, "a"), "2024-01-01")
    spark_df = tables.read_partition(spark, tables.qualified(db, "s"), "2024-01-01")
    assert arrow_df.schema == spark_df.schema
    assert spark.read.parquet(by_arrow).schema == spark.read.parquet(by_spark).schema
    assert sorted_rows(arrow_df) == sorted_rows(spark_df)
    assert sorted_rows(arrow_df) == sorted(published_rows(40), key=lambda r: r[0])
    # pyarrow reads them too, with the same values
    table = pq.read_table(str(local(by_arrow)))
    assert sorted(table.to_pylist(), key=lambda r: r["id"]) == sorted(
        pq.read_table(str(local(by_spark))).to_pylist(), key=lambda r: r["id"])


def test_empty_frame_gives_the_schema_and_no_rows(spark, cfg_factory):
    table = tables.qualified(cfg_factory().tables, "e")
    df = spark.createDataFrame([], PUBLISHED)
    location = tables.write_partition(spark, df, table, "2024-01-01", arrow=True)
    assert len(data_files(location)) == 1
    back = tables.read_partition(spark, table, "2024-01-01")
    assert back.count() == 0 and back.schema == spark.createDataFrame([], PUBLISHED).schema
    assert spark.read.parquet(location).columns == df.columns
    assert pq.read_table(str(local(location))).num_rows == 0


def test_file_settings_row_groups_and_no_vector_dictionary(spark, tmp_path):
    n = arrow_io.ROW_GROUP_ROWS + 100
    df = spark.range(n, numPartitions=1).selectExpr(
        "cast(id % 7 as string) AS id", "array(cast(id as float), cast(rand(1) as float)) AS vector")
    run_dir = f"file:{tmp_path}/run"
    assert arrow_io.write_parts(df, run_dir) == n
    (name,) = data_files(run_dir)
    meta = pq.read_metadata(str(local(run_dir) / name))
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [arrow_io.ROW_GROUP_ROWS, 100]
    columns = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i) for i in range(2)}
    assert columns["vector.list.element"].compression == "SNAPPY"
    assert not any("DICT" in e for e in columns["vector.list.element"].encodings)
    assert any("DICT" in e for e in columns["id"].encodings)
    assert (local(run_dir) / "_SUCCESS").exists()
    with pytest.raises(FileExistsError):
        arrow_io.write_parts(df, run_dir)


def test_batch_fn_is_applied_in_both_writers(spark, cfg_factory):
    db = cfg_factory().tables
    x = np.random.default_rng(3).normal(size=(30, 4)).astype(np.float32)
    matrix = np.random.default_rng(4).normal(size=(4, 4)).astype(np.float32)
    df = spark.createDataFrame([(f"i{k}", x[k].tolist()) for k in range(30)], "id string, vector array<float>")
    expected = x @ matrix
    for name, arrow, nullable in (("a", True, False), ("n", True, True), ("s", False, True)):
        table = tables.qualified(db, name)
        tables.write_partition(spark, df.repartition(2), table, "2024-01-01", batch_fn=times(matrix, nullable),
                               arrow=arrow)
        back = {r.id: r.vector for r in tables.read_partition(spark, table, "2024-01-01").collect()}
        got = np.array([back[f"i{k}"] for k in range(30)], dtype=np.float32)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=name)


# ----------------------------------------------------------------------------- commit protocol
def test_a_failed_attempt_leaves_no_rows_and_the_retry_commits(spark, tmp_path):
    """local[2,2] retries a failed task once: partition 0's first attempt writes a file, then
    fails; a lost speculative attempt of partition 1 leaves a complete copy of its rows in
    _temporary. Each row is in the result once, and _temporary is gone."""
    marker = tmp_path / "failed_once"
    run_dir = f"file:{tmp_path}/run"

    def flaky(batch):
        from pyspark import TaskContext

        ctx = TaskContext.get()
        folder = f"{tmp_path}/run/_temporary"
        if ctx.partitionId() == 1 and ctx.attemptNumber() == 0:
            os.makedirs(f"{folder}/lost", exist_ok=True)  # a speculative duplicate that lost
            pq.write_table(pa.Table.from_batches([batch]), f"{folder}/lost/part-00001-dup.parquet")
        if ctx.partitionId() == 0 and ctx.attemptNumber() == 0:
            written = [p for _, _, files in os.walk(folder) for p in files if p.startswith("part-00000-")]
            if written:  # the attempt's file is open: fail on its second batch
                marker.write_text("")
                raise RuntimeError("injected task failure")
        return batch

    previous = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "5")
    try:
        df = spark.createDataFrame([(f"i{k}", [float(k)]) for k in range(40)], "id string, vector array<float>")
        assert arrow_io.write_parts(df.repartition(2), run_dir, batch_fn=flaky) == 40
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", previous)
    assert marker.exists()  # the first attempt did fail, and was retried
    assert not (local(run_dir) / "_temporary").exists()
    assert len(data_files(run_dir)) == 2
    ids = [r.id for r in spark.read.parquet(run_dir).collect()]
    assert sorted(ids) == sorted(f"i{k}" for k in range(40))
    assert len(pq.read_table(str(local(run_dir))).column("id")) == 40


def test_a_failed_write_leaves_nothing_and_the_partition_unchanged(spark, cfg_factory, tmp_path):
    def fail(batch):
        raise RuntimeError("boom")

    df = spark.createDataFrame([("a", [1.0])], "id string, vector array<float>")
    run_dir = f"file:{tmp_path}/run"
    with pytest.raises(Exception, match="boom"):
        arrow_io.write_parts(df, run_dir, batch_fn=fail)
    assert not local(run_dir).exists()
    table = tables.qualified(cfg_factory().tables, "t")
    tables.write_partition(spark, df, table, "2024-01-01", arrow=True)
    with pytest.raises(Exception, match="boom"):
        tables.write_partition(spark, df, table, "2024-01-01", batch_fn=fail, arrow=True)
    assert [r.id for r in tables.read_partition(spark, table, "2024-01-01").collect()] == ["a"]


def test_spark_writer_where_pyarrow_cannot_open_the_location(spark, cfg_factory, monkeypatch, embedlib_log):
    monkeypatch.setattr(arrow_io, "filesystem", lambda uri: None)  # on the driver, where it decides
    table = tables.qualified(cfg_factory().tables, "t")
    df = spark.createDataFrame([("a", [1.0])], "id string, vector array<float>")
    tables.write_partition(spark, df, table, "2024-01-01", arrow=True)
    assert [r.id for r in tables.read_partition(spark, table, "2024-01-01").collect()] == ["a"]
    lines = [r for r in embedlib_log.records if "pyarrow cannot open" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelname == "INFO"


# ----------------------------------------------------------------------------- reading
def test_splits_cover_every_row_once(tmp_path):
    folder = tmp_path / "a b"  # a space: locations are not percent-encoded
    (folder / "sub").mkdir(parents=True)
    (folder / "_temporary").mkdir()
    ids = [f"i{k}" for k in range(95)]
    table = pa.table({"id": ids, "vector": [[float(k), 0.0] for k in range(95)]})
    pq.write_table(table.slice(0, 75), folder / "part-0.parquet", row_group_size=10)
    pq.write_table(table.slice(75), folder / "sub" / "part-1.parquet", row_group_size=10)
    for skipped in ("_temporary/part-9.parquet", ".part-0.parquet.crc", "_SUCCESS"):
        pq.write_table(table.slice(0, 3), folder / skipped)
    (folder / "empty.parquet").write_bytes(b"")
    location = f"file:{folder}"
    found = arrow_io.splits(location, rows_per_split=25)
    assert {s.path for s in found} == {f"{location}/part-0.parquet", f"{location}/sub/part-1.parquet"}
    assert [s.row_groups for s in found] == [(0, 1), (2, 3), (4, 5), (6, 7), (0, 1)]
    read = [b for s in found for b in arrow_io.read_split(s, ["id"], batch_rows=7)]
    assert all(b.schema.names == ["id"] and b.num_rows <= 7 for b in read)
    assert sorted(v for b in read for v in b.column(0).to_pylist()) == sorted(ids)
    # one file, and a split survives pickling (it is sent to the tasks)
    import pickle
    (one,) = arrow_io.splits(f"{location}/sub/part-1.parquet", rows_per_split=100)
    assert pickle.loads(pickle.dumps(one)) == one and one.row_groups == (0, 1)
    assert arrow_io.splits("s3a://bucket/x") is None
    with pytest.raises(FileNotFoundError):
        arrow_io.splits(f"file:{tmp_path}/nowhere")


def test_splits_of_a_written_table_read_back_every_row(spark, tmp_path):
    df = spark.createDataFrame(published_rows(50), PUBLISHED).repartition(3)
    run_dir = f"file:{tmp_path}/run"
    arrow_io.write_parts(df, run_dir)
    found = arrow_io.splits(run_dir)
    assert len(found) == 3
    got = pa.Table.from_batches([b for s in found for b in arrow_io.read_split(s, ["id", "vector", "count"])])
    assert sorted(got.to_pylist(), key=lambda r: r["id"]) == sorted(
        ({"id": r[0], "vector": r[1], "count": r[2]} for r in published_rows(50)), key=lambda r: r["id"])


# ----------------------------------------------------------------------------- config
def test_vector_io_config(cfg_factory):
    assert cfg_factory().tables.vector_io == "arrow"
    assert cfg_factory(tables={"vector_io": "spark"}).tables.vector_io == "spark"
    with pytest.raises(ConfigError, match="tables.vector_io must be one of arrow, spark; got 'pyarrow'"):
        cfg_factory(tables={"vector_io": "pyarrow"})
