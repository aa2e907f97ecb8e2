"""The table layer: atomic, idempotent dt partitions and clear errors."""
import pytest
from pyspark.errors import SparkRuntimeException

from embedlib import tables
from embedlib.config import InputConfig


def frame(spark, rows):
    return spark.createDataFrame(rows, "id string, vector array<float>")


def test_rewrite_replaces_partition_without_duplicates(spark, cfg_factory):
    table = tables.qualified(cfg_factory().tables, "t")
    tables.write_partition(spark, frame(spark, [("a", [1.0]), ("b", [2.0])]), table, "2024-01-01")
    tables.write_partition(spark, frame(spark, [("c", [3.0])]), table, "2024-01-02")
    tables.write_partition(spark, frame(spark, [("a", [9.0])]), table, "2024-01-01")
    assert tables.list_partitions(spark, table) == ["2024-01-01", "2024-01-02"]
    assert [tuple(r) for r in tables.read_partition(spark, table, "2024-01-01").collect()] == [("a", [9.0])]
    assert tables.read_partition(spark, table, "2024-01-02").count() == 1


def test_failed_write_leaves_partition_unchanged(spark, cfg_factory):
    table = tables.qualified(cfg_factory().tables, "t")
    tables.write_partition(spark, frame(spark, [("a", [1.0])]), table, "2024-01-01")
    failing = frame(spark, [("x", [1.0])]).selectExpr(
        "id", "if(id = 'x', raise_error('boom'), vector) AS vector")
    with pytest.raises(SparkRuntimeException, match="boom"):
        tables.write_partition(spark, failing, table, "2024-01-01")
    assert [r.id for r in tables.read_partition(spark, table, "2024-01-01").collect()] == ["a"]


def test_schema_change_is_a_clear_error(spark, cfg_factory):
    table = tables.qualified(cfg_factory().tables, "t")
    tables.write_partition(spark, frame(spark, [("a", [1.0])]), table, "2024-01-01")
    other = spark.createDataFrame([("a", 1)], "id string, n int")
    with pytest.raises(tables.TableError, match=r"has columns .*'vector'.*the job writes .*'n'"):
        tables.write_partition(spark, other, table, "2024-01-02")


def test_missing_partition_and_input_errors(spark, cfg_factory, tmp_path):
    table = tables.qualified(cfg_factory().tables, "t")
    assert tables.list_partitions(spark, table) == []
    tables.write_partition(spark, frame(spark, [("a", [1.0])]), table, "2024-01-01")
    with pytest.raises(tables.TableError, match="no partition dt=2024-01-05"):
        tables.read_partition(spark, table, "2024-01-05")
    with pytest.raises(tables.TableError, match="input path .*nowhere.* does not exist"):
        tables.read_input(spark, InputConfig(path=str(tmp_path / "nowhere")))
    with pytest.raises(tables.TableError, match="input.table is not set"):
        tables.read_input(spark, InputConfig(format="table"))


def test_reads_csv_parquet_and_tables(spark, cfg_factory, tmp_path):
    df = spark.createDataFrame([("u", "a", "1")], "user_id string, item_id string, ts string")
    df.write.parquet(str(tmp_path / "p"))
    df.write.option("header", True).csv(str(tmp_path / "c"))
    table = tables.qualified(cfg_factory().tables, "log")
    tables.write_partition(spark, df, table, "2024-01-01")
    for cfg in (InputConfig(format="parquet", path=str(tmp_path / "p")),
                InputConfig(format="csv", path=str(tmp_path / "c")),
                InputConfig(format="table", table=table)):
        assert tables.read_input(spark, cfg).select("user_id", "item_id", "ts").collect() == [("u", "a", "1")]


def test_float_vectors_are_written_without_dictionary(spark, cfg_factory):
    import glob

    import pyarrow.parquet as pq

    table = tables.qualified(cfg_factory().tables, "t")
    df = spark.createDataFrame([(f"i{k % 3}", [1.0, 2.0], "same") for k in range(50)],
                               "id string, vector array<float>, tag string").coalesce(1)
    location = tables.write_partition(spark, df, table, "2024-01-01")
    (path,) = glob.glob(location.removeprefix("file:") + "/*.parquet")
    chunk = pq.ParquetFile(path).metadata.row_group(0)
    encodings = {chunk.column(i).path_in_schema: chunk.column(i).encodings for i in range(chunk.num_columns)}
    assert not any("DICTIONARY" in e for e in encodings["vector.list.element"])
    assert any("DICTIONARY" in e for e in encodings["tag"])  # other columns keep the default
