"""EmbeddingIndex against a brute-force NumPy reference, on NumPy and (where a GPU exists) CuPy."""
import numpy as np
import pytest

from embedlib import knn as topk
from embedlib.config import ConfigError, config_from_dict
from embedlib.serving import EmbeddingIndex, ServingError, UnknownIdError
from embedlib.serving.backend import BackendError, cupy_status, select_backend
from tests.helpers import reference_topk

HAS_GPU = cupy_status()[0] is not None
BACKENDS = ["numpy", pytest.param("cupy", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not HAS_GPU, reason=cupy_status()[1] or "no GPU")])]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def make_ids(n):
    return np.array([f"item{i:05d}" for i in range(n)], dtype=object)


@pytest.fixture(scope="module")
def random_data():
    rng = np.random.default_rng(7)
    return make_ids(3000), rng.standard_normal((3000, 24)).astype(np.float32)


@pytest.mark.parametrize("metric", ["dot", "cosine"])
def test_topk_equals_brute_force(backend, random_data, metric):
    ids, vectors = random_data
    index = EmbeddingIndex(ids, vectors, backend=backend, metric=metric, max_chunk_bytes=40_000)
    result = index.topk(ids[:200], k=15)
    scores, rows = reference_topk(vectors[:200], vectors, 15, metric=metric)
    np.testing.assert_array_equal(result.rows, rows)
    np.testing.assert_array_equal(result.ids, ids[rows])
    np.testing.assert_allclose(result.scores, scores, rtol=1e-5, atol=1e-5)
    assert result.query_ids.tolist() == ids[:200].tolist()


@pytest.mark.parametrize("max_chunk_bytes,query_batch", [(4096, 1), (4096, 33), (100_000, 64),
                                                         (2**30, 1024)])
def test_ties_follow_row_order_whatever_the_chunking(backend, max_chunk_bytes, query_batch):
    # Small integer vectors: exact scores, so ties are real and plentiful.
    rng = np.random.default_rng(3)
    vectors = rng.integers(-2, 3, size=(2000, 4)).astype(np.float32)
    ids = make_ids(2000)
    index = EmbeddingIndex(ids, vectors, backend=backend, metric="dot",
                           max_chunk_bytes=max_chunk_bytes, query_batch=query_batch)
    result = index.topk(ids[:100], k=40, exclude_self=True)
    scores, rows = reference_topk(vectors[:100], vectors, 40, exclude_rows=np.arange(100))
    np.testing.assert_array_equal(result.rows, rows)
    np.testing.assert_array_equal(result.scores, scores)


@pytest.mark.parametrize("first_chunk_rows", [4096, 64, 1])
def test_chunking_gives_the_same_answer_as_one_chunk(backend, random_data, monkeypatch,
                                                     first_chunk_rows):
    ids, vectors = random_data
    one = EmbeddingIndex(ids, vectors, backend=backend, max_chunk_bytes=2**30).topk(ids, k=10)
    monkeypatch.setattr(topk, "FIRST_CHUNK_ROWS", first_chunk_rows)
    for max_chunk_bytes, query_batch in [(4096, 7), (50_000, 500), (1_000_000, 3000)]:
        chunked = EmbeddingIndex(ids, vectors, backend=backend, max_chunk_bytes=max_chunk_bytes,
                                 query_batch=query_batch).topk(ids, k=10)
        np.testing.assert_array_equal(chunked.rows, one.rows)
        np.testing.assert_allclose(chunked.scores, one.scores, rtol=1e-6, atol=1e-6)


def test_exclude_self_leaves_the_query_out(backend, random_data):
    ids, vectors = random_data
    index = EmbeddingIndex(ids, vectors, backend=backend)
    with_self = index.topk(ids[:50], k=5)
    without = index.topk(ids[:50], k=5, exclude_self=True)
    assert (with_self.rows[:, 0] == np.arange(50)).all()  # cosine 1 with itself
    assert not (without.rows == np.arange(50)[:, None]).any()
    np.testing.assert_array_equal(without.rows[:, :4], with_self.rows[:, 1:])


def test_cosine_and_dot_rank_differently_on_unnormalised_vectors(backend):
    ids = make_ids(3)
    vectors = np.array([[1, 0], [10, 10], [0.9, 0.1]], dtype=np.float32)
    index = EmbeddingIndex(ids, vectors, backend=backend)
    dot = index.topk(["item00000"], k=1, metric="dot", exclude_self=True)
    assert dot.ids[0, 0] == "item00001"
    cosine = index.topk(["item00000"], k=2, metric="cosine", exclude_self=True)
    assert cosine.ids[0].tolist() == ["item00002", "item00001"]
    np.testing.assert_allclose(cosine.scores[0], [0.9 / np.hypot(0.9, 0.1), np.sqrt(0.5)], rtol=1e-6)


def test_float16_halves_memory_and_ranks_like_its_values(backend, random_data):
    ids, vectors = random_data
    f32 = EmbeddingIndex(ids, vectors, backend=backend, dtype="float32")
    f16 = EmbeddingIndex(ids, vectors, backend=backend, dtype="float16")
    assert f16.matrix.nbytes * 2 == f32.matrix.nbytes
    result = f16.topk(ids[:100], k=10, metric="dot")
    scores, rows = reference_topk(vectors[:100].astype(np.float16), vectors.astype(np.float16), 10)
    np.testing.assert_array_equal(result.rows, rows)
    np.testing.assert_allclose(result.scores, scores, rtol=1e-5, atol=1e-4)
    assert f16.lookup(ids[:3]).vectors.dtype == np.float32


def test_vector_queries_and_their_checks(backend, random_data):
    ids, vectors = random_data
    index = EmbeddingIndex(ids, vectors, backend=backend, metric="dot")
    queries = np.random.default_rng(0).standard_normal((9, 24)).astype(np.float32)
    result = index.topk(queries, k=3)
    np.testing.assert_array_equal(result.rows, reference_topk(queries, vectors, 3)[1])
    assert result.query_ids is None
    with pytest.raises(ServingError, match=r"shape \(b, 24\)"):
        index.topk(queries[:, :5], k=3)
    with pytest.raises(ServingError, match="NaN or Inf"):
        index.topk(np.full((1, 24), np.nan, dtype=np.float32), k=3)
    with pytest.raises(ServingError, match="exclude_self needs id queries"):
        index.topk(queries, k=3, exclude_self=True)


@pytest.mark.parametrize("k", [0, -1, 3001, 2.5, True])
def test_bad_k_is_a_clear_error(backend, random_data, k):
    ids, vectors = random_data
    index = EmbeddingIndex(ids, vectors, backend=backend)
    with pytest.raises(ServingError, match=r"k must be an integer in \[1, 3000\]"):
        index.topk(ids[:2], k=k)
    with pytest.raises(ServingError, match=r"\[1, 2999\]"):
        index.topk(ids[:2], k=3000, exclude_self=True)


def test_unknown_id_policies(backend, random_data):
    ids, vectors = random_data
    asked = ["item00002", "nope", "item00001", "gone"]
    index = EmbeddingIndex(ids, vectors, backend=backend)
    with pytest.raises(UnknownIdError, match="2 unknown id\\(s\\): 'nope', 'gone'") as err:
        index.lookup(asked)
    assert err.value.unknown == ["nope", "gone"]
    zero = index.lookup(asked, unknown_ids="zero")
    assert zero.ids.tolist() == asked and zero.found.tolist() == [True, False, True, False]
    np.testing.assert_array_equal(zero.vectors[[0, 2]], vectors[[2, 1]])
    assert not zero.vectors[[1, 3]].any() and zero.n_unknown == 2
    skip = index.lookup(asked, unknown_ids="skip")
    assert skip.ids.tolist() == ["item00002", "item00001"] and skip.n_unknown == 2
    np.testing.assert_array_equal(skip.vectors, vectors[[2, 1]])
    similar = index.topk(asked, k=4, unknown_ids="skip", exclude_self=True)
    assert similar.query_ids.tolist() == ["item00002", "item00001"] and similar.n_unknown == 2
    zero_similar = index.topk(asked, k=2, unknown_ids="zero", metric="dot")
    assert zero_similar.ids[1].tolist() == ["item00000", "item00001"]  # all scores 0: row order
    with pytest.raises(UnknownIdError):
        index.topk(asked, k=2)
    with pytest.raises(ServingError, match="unknown_ids must be one of"):
        index.lookup(asked, unknown_ids="ignore")


def test_select_backend():
    assert select_backend("numpy").name == "numpy"
    assert select_backend("auto").name == ("cupy" if HAS_GPU else "numpy")
    with pytest.raises(BackendError, match="backend must be one of"):
        select_backend("tpu")
    if not HAS_GPU:
        with pytest.raises(BackendError, match="backend cupy was requested but"):
            select_backend("cupy")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason=cupy_status()[1] or "no GPU")
def test_cupy_results_equal_numpy_results(random_data):
    ids, vectors = random_data
    on_gpu = EmbeddingIndex(ids, vectors, backend="cupy").topk(ids, k=10, exclude_self=True)
    on_cpu = EmbeddingIndex(ids, vectors, backend="numpy").topk(ids, k=10, exclude_self=True)
    np.testing.assert_array_equal(on_gpu.rows, on_cpu.rows)
    np.testing.assert_allclose(on_gpu.scores, on_cpu.scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key,value,message", [
    ("backend", "tpu", "serve.backend must be one of auto, numpy, cupy"),
    ("dtype", "float64", "serve.dtype must be one of"),
    ("unknown_ids", "ignore", "serve.unknown_ids must be one of error, zero, skip"),
    ("k", 0, "serve.k must be >= 1"),
    ("max_chunk_bytes", 100, r"0 \(auto\) or >= 4096"),
])
def test_serve_config_is_checked(key, value, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"serve": {key: value}})


def test_rows_of_one_id_is_the_hash_lookup_of_the_batch_path():
    ids = [f"i{j}" for j in range(50)]
    index = EmbeddingIndex(ids, np.eye(50, 4, dtype=np.float32), backend="numpy")
    for one in ("i0", "i49", "i7", "nope", ""):
        assert index.rows_of([one]).tolist() == index.rows_of([one, "i3"])[:1].tolist()
        assert index.rows_of(np.array([one], dtype=object)).dtype == np.int64
    assert index.rows_of(["i7"]).tolist() == [7] and index.rows_of(["nope"]).tolist() == [-1]
