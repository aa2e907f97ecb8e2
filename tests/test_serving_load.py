"""Loading a published version from Parquet with pyarrow: layout, extra columns, bad vectors."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedlib.serving import EmbeddingIndex, ServingError, VectorsError, arrays_from_arrow, read_embeddings


def published_table(ids, vectors, value_type=None):
    """Like a published partition: id, vector and the extra columns the steps add."""
    return pa.table({
        "id": pa.array(ids, pa.string()),
        "vector": pa.array([None if v is None else list(v) for v in vectors], pa.list_(value_type or pa.float32())),
        "count": pa.array(np.arange(len(ids)), pa.int64()),
        "carried": pa.array([False] * len(ids)),
        "trained_dt": pa.array(["2024-01-10"] * len(ids)),
    })


def test_folder_of_parts_with_extra_columns(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((10, 6)).astype(np.float32)
    ids = [f"i{j}" for j in range(10)]
    folder = tmp_path / "dt=2024-01-10" / "run=1"
    folder.mkdir(parents=True)
    pq.write_table(published_table(ids[:4], vectors[:4]), folder / "part-0.parquet")
    pq.write_table(published_table(ids[4:], vectors[4:], pa.float64()), folder / "part-1.parquet")
    (folder / "_SUCCESS").write_text("")
    got_ids, got = read_embeddings(tmp_path / "dt=2024-01-10")
    order = np.argsort(got_ids)
    assert sorted(got_ids.tolist()) == sorted(ids)
    np.testing.assert_array_equal(got[order], vectors[np.argsort(ids)])
    assert got.dtype == np.float32 and got.flags.c_contiguous
    index = EmbeddingIndex.from_parquet(folder / "part-0.parquet", backend="numpy")
    assert len(index) == 4 and index.dim == 6


def test_dt_folder_with_two_runs_is_refused(tmp_path):
    dt_folder = tmp_path / "dt=2024-01-10"
    for run in ("run=1", "run=2"):  # a rerun keeps the previous run's folder for readers in flight
        (dt_folder / run).mkdir(parents=True)
        pq.write_table(published_table(["a"], [[1.0, 2.0]]), dt_folder / run / "part-0.parquet")
    with pytest.raises(VectorsError, match=r"holds 2 run folders \(run=1, run=2\).*--conf and --dt"):
        read_embeddings(dt_folder)
    ids, _ = read_embeddings(dt_folder / "run=2")
    assert ids.tolist() == ["a"]


def test_sliced_batches_are_flattened_at_their_offsets():
    table = published_table(["a", "b", "c"], [[1, 2], [3, 4], [5, 6]]).slice(1, 2)
    ids, vectors = arrays_from_arrow(table)
    assert ids.tolist() == ["b", "c"]
    np.testing.assert_array_equal(vectors, [[3, 4], [5, 6]])


@pytest.mark.parametrize("vectors,message", [
    ([[1, 2], [np.nan, 0], [1, 1]], "NaN or Inf values, e.g. id 'b'"),
    ([[1, 2], [1, 1], [np.inf, 0]], "NaN or Inf values, e.g. id 'c'"),
    ([[1, 2], [1, 2, 3], [1, 1]], "id 'b' has 3 values, id 'a' has 2"),
    ([[1, 2], [1, 1], None], "id 'c' has a null vector"),
    ([[], [], []], "same length > 0"),
])
def test_bad_vectors_name_the_id(vectors, message):
    with pytest.raises(VectorsError, match=message.replace("(", r"\(")):
        EmbeddingIndex(*arrays_from_arrow(published_table(["a", "b", "c"], vectors)),
                                   backend="numpy")


def test_duplicate_ids_and_missing_columns_are_errors(tmp_path):
    with pytest.raises(VectorsError, match="1 ids appear more than once, e.g. 'a'"):
        EmbeddingIndex(["a", "b", "a"], np.ones((3, 2), np.float32), backend="numpy")
    with pytest.raises(VectorsError, match="no column 'vector'"):
        arrays_from_arrow(pa.table({"id": ["a"], "embedding": [[1.0]]}))
    with pytest.raises(VectorsError, match="does not exist"):
        read_embeddings(tmp_path / "missing")
    with pytest.raises(VectorsError, match="null value in its vector"):
        arrays_from_arrow(pa.table({"id": ["a", "b"], "vector": [[1.0, 2.0], [None, 1.0]]}))


def test_float16_overflow_is_an_error():
    with pytest.raises(ServingError, match="overflow float16"):
        EmbeddingIndex(["a"], np.array([[1e6, 0]], np.float32), backend="numpy", dtype="float16")
