"""The Spark passes (embedlib.spark_passes) and the vector files and codec they read, against
numpy references."""
import numpy as np
import pyarrow as pa
import pytest
from pyspark.sql import functions as F

from embedlib import spark_passes, vector_codec
from embedlib.vector_files import FileSource


def vectors_df(spark, x, parts=3, ids=None):
    ids = ids if ids is not None else [f"i{k}" for k in range(len(x))]
    rows = [(i, None if v is None else [float(a) for a in v]) for i, v in zip(ids, x)]
    return spark.createDataFrame(rows, "id string, vector array<float>").repartition(parts)


def f32(x):
    return np.asarray(x, dtype=np.float32).astype(np.float64)


@pytest.mark.parametrize("flat_max", [spark_passes.FLAT_REDUCE_MAX_PARTITIONS, 0])  # 0: the tree
def test_gram_matches_numpy_in_float64(spark, monkeypatch, flat_max, rng):
    monkeypatch.setattr(spark_passes, "FLAT_REDUCE_MAX_PARTITIONS", flat_max)
    x = rng.normal(size=(500, 8)).astype(np.float32)
    g = spark_passes.gram(vectors_df(spark, x, parts=5), "vector", 8)
    assert g.n_rows == 500 and g.n_invalid == 0
    np.testing.assert_allclose(g.matrix, f32(x).T @ f32(x), rtol=1e-12)


def test_cross_gram_with_transform(spark, rng):
    a, b = rng.normal(size=(300, 6)), rng.normal(size=(300, 6))
    m = rng.normal(size=(6, 6))
    df = spark.createDataFrame([(f"i{k}", a[k].tolist(), b[k].tolist()) for k in range(300)],
                               "id string, a array<float>, b array<float>").repartition(4)
    cg = spark_passes.cross_gram(df, "a", "b", 6, m)
    np.testing.assert_allclose(cg.cross, (f32(a) @ m).T @ f32(b), rtol=1e-10)
    assert cg.sq_norm_a == pytest.approx(np.sum((f32(a) @ m) ** 2), rel=1e-12)
    assert cg.sq_norm_b == pytest.approx(np.sum(f32(b) ** 2), rel=1e-12)
    assert (cg.n_rows, cg.n_invalid) == (300, 0)


@pytest.mark.parametrize("flat_max", [spark_passes.FLAT_REDUCE_MAX_PARTITIONS, 0])
def test_bad_vectors_are_counted_not_summed(spark, monkeypatch, flat_max):
    monkeypatch.setattr(spark_passes, "FLAT_REDUCE_MAX_PARTITIONS", flat_max)
    x = [[1.0, 2.0], [float("nan"), 1.0], [1.0], None, [float("inf"), 0.0], [3.0, 4.0]]
    g = spark_passes.gram(vectors_df(spark, x, parts=2), "vector", 2)
    assert (g.n_rows, g.n_invalid) == (2, 4)
    np.testing.assert_allclose(g.matrix, np.array([[10.0, 14.0], [14.0, 20.0]]))
    bad = vectors_df(spark, x).where(spark_passes.invalid_vector("vector", 2)).count()
    assert bad == 4


def test_apply_transform_keeps_other_columns(spark, rng):
    x = rng.normal(size=(50, 4)).astype(np.float32)
    m = rng.normal(size=(4, 4))
    df = vectors_df(spark, x, parts=2).withColumnRenamed("id", "key")
    out = {r.key: r.vector for r in spark_passes.apply_transform(df, "vector", m).collect()}
    np.testing.assert_allclose(np.array([out[f"i{k}"] for k in range(50)]),
                               (f32(x) @ m).astype(np.float32), rtol=1e-6)


def test_row_cosines_match_numpy(spark, rng):
    a, b = rng.normal(size=(40, 5)), rng.normal(size=(40, 5))
    a[3] = 0.0  # a zero vector has cosine 0, not NaN
    m = rng.normal(size=(5, 5))
    df = spark.createDataFrame([(f"i{k}", a[k].tolist(), b[k].tolist()) for k in range(40)],
                               "id string, a array<float>, b array<float>").repartition(3)
    rows = {r.id: (r.raw, r.moved) for r in
            spark_passes.row_cosines(df, "a", "b", 5, {"raw": None, "moved": m}, keep=["id"]).collect()}

    def cos(x, y):
        n = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
        return np.divide(np.einsum("ij,ij->i", x, y), n, out=np.zeros(len(n)), where=n > 0)

    got = np.array([rows[f"i{k}"] for k in range(40)])
    np.testing.assert_allclose(got[:, 0], cos(f32(a), f32(b)), atol=1e-12)
    np.testing.assert_allclose(got[:, 1], cos(f32(a) @ m, f32(b)), atol=1e-12)
    assert got[3, 0] == 0.0


def test_gram_from_files_equals_the_frame(spark, tmp_path, rng):
    """A FileSource pass (pyarrow in the tasks) sums the same rows as the frame's, invalid ones
    counted, for list<double> files too; a missing column or a non-float column gives no source."""
    x = rng.normal(size=(700, 6))
    rows = [None if k == 5 else v for k, v in enumerate(x.tolist())]
    rows[9] = [1.0] * 5  # wrong length
    rows[11] = [float("nan")] * 6
    path = str(tmp_path / "v")
    spark.createDataFrame([(f"i{k}", v) for k, v in enumerate(rows)], "id string, vec array<double>") \
        .repartition(3).write.parquet(path)
    df = spark.read.parquet(path).select("id", F.col("vec").cast("array<float>").alias("vector"))
    source = FileSource.of("file:" + path, {"vector": "vec"})
    assert source is not None and len(source.splits) == 3
    from_files, from_frame = spark_passes.gram(df, "vector", 6, source), spark_passes.gram(df, "vector", 6)
    assert (from_files.n_rows, from_files.n_invalid) == (from_frame.n_rows, from_frame.n_invalid) == (697, 3)
    np.testing.assert_allclose(from_files.matrix, from_frame.matrix, rtol=1e-12)
    assert FileSource.of(path, {"vector": "nope"}) is None
    assert FileSource.of(path, {"vector": "id"}) is None
    assert FileSource.of("nosuchscheme://x/y", {"vector": "vec"}) is None


def test_binary_vectors_read_back_as_the_matrix(spark, tmp_path, rng):
    """FileSource.binary_vectors: one float32 block per vector, nulls where a vector is bad;
    batch_matrix reads the blocks back, cross_gram counts the nulls as invalid."""
    x = rng.normal(size=(50, 4)).astype(np.float32)
    rows = [(f"i{k}", v, k) for k, v in enumerate(x.tolist())]
    rows[3] = ("i3", [1.0, 2.0], 3)
    rows[7] = ("i7", None, 7)
    path = str(tmp_path / "v")
    spark.createDataFrame(rows, "id string, vector array<float>, count long").coalesce(2).write.parquet(path)
    source = FileSource.of(path, {"id": "id", "vector": "vector", "count": "count"})
    df = source.binary_vectors(spark, 4, "t")
    assert [f.dataType.simpleString() for f in df.schema.fields] == ["string", "binary", "bigint"]
    got = {r.id: r for r in df.collect()}
    assert got["i3"].t is None and got["i7"].t is None and got["i9"]["count"] == 9
    blocks = pa.array([got[f"i{k}"].t for k in (0, 1, 2)], type=pa.binary())
    np.testing.assert_array_equal(vector_codec.batch_matrix(blocks, 4), x[:3])
    assert vector_codec.batch_matrix(blocks, 3) is None  # wrong length
    joined = df.join(df.withColumnRenamed("t", "b").select("id", "b"), "id")
    cg = spark_passes.cross_gram(joined, "t", "b", 4)
    keep = [k for k in range(50) if k not in (3, 7)]
    assert (cg.n_rows, cg.n_invalid) == (48, 2)
    np.testing.assert_allclose(cg.cross, f32(x[keep]).T @ f32(x[keep]), rtol=1e-10)


def test_one_valid_vector_rule_on_spark_and_on_arrow(spark):
    """vector_codec.valid_rows (Arrow, in the tasks) and spark_passes.invalid_vector (Spark SQL)
    apply the same rule: null, wrong length, a null element, NaN or Inf make a vector invalid."""
    x = [[1.0, 2.0], [float("nan"), 1.0], [1.0], None, [float("inf"), 0.0], [3.0, None],
         [float("-inf"), 1.0], [0.0, 0.0]]
    df = spark.createDataFrame([(f"i{k}", v) for k, v in enumerate(x)], "id string, vector array<float>")
    flagged = df.select("id", spark_passes.invalid_vector("vector", 2).alias("bad")).collect()
    on_spark = {r.id: not r.bad for r in flagged}
    batch = pa.RecordBatch.from_pylist([{"vector": v} for v in x],
                                       schema=pa.schema([("vector", pa.list_(pa.float32()))]))
    on_arrow = vector_codec.valid_rows(batch, ["vector"], 2)
    assert [on_spark[f"i{k}"] for k in range(len(x))] == on_arrow.tolist()
    assert on_arrow.tolist() == [True, False, False, False, False, False, False, True]


def test_unreadable_files_switch_readers_with_a_warning(tmp_path, monkeypatch, caplog):
    """FileSource.of says why it gives up on a location (a damaged file here): a permissions
    or namenode error must not silently move a pass to Spark's reader."""
    import logging

    monkeypatch.setattr(logging.getLogger("embedlib"), "propagate", True)
    folder = tmp_path / "v"
    folder.mkdir()
    (folder / "part-0.parquet").write_bytes(b"not parquet at all" * 10)
    with caplog.at_level(logging.INFO, logger="embedlib"):
        assert FileSource.of(str(folder), {"vector": "vector"}) is None
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and str(folder) in r.getMessage()]
    assert warned and "Spark's reader" in warned[0].getMessage()


def test_transform_batches_smooths_toward_the_parent_and_drops_its_column(rng):
    """Rows with a parent vector: beta * (x @ m) + (1 - beta) * parent; rows without: x @ m;
    kept (carried) rows as they are; the parent column is not written."""
    x, parent, m = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=(3, 3))
    batch = pa.RecordBatch.from_pydict({
        "id": ["a", "b", "c", "d"],
        "vector": pa.array(x.tolist(), type=pa.list_(pa.float32())),
        "carried": [False, False, True, False],
        "parent_vector": pa.array([parent[0].tolist(), None, parent[2].tolist(), parent[3].tolist()],
                                  type=pa.list_(pa.float32()))})
    out = spark_passes.transform_batches(m, "vector", keep_col="carried", parent_col="parent_vector",
                                         smoothing=0.3)(batch)
    assert out.schema.names == ["id", "vector", "carried"]
    got = vector_codec.batch_matrix(out.column("vector"), 3).astype(np.float64)
    x32, p32 = f32(x), f32(parent)
    want = [0.3 * x32[0] @ m + 0.7 * p32[0], x32[1] @ m, x32[2], 0.3 * x32[3] @ m + 0.7 * p32[3]]
    np.testing.assert_allclose(got, np.array(want), rtol=1e-5, atol=1e-6)
