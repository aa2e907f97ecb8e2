"""Precomputed neighbours: the version's neighbours table, loaded with its vectors from one
manifest, answers /similar where it can (known ids, k <= K, its metric, exclude_self) with the
same result as the exact search; everything else goes to the exact search; `source` says which."""
import numpy as np
import pytest
from fastapi.testclient import TestClient

from embedlib import manifest
from embedlib.config import ServeConfig
from embedlib.serving.follow import VersionFollower, load_version
from embedlib.serving.index import EmbeddingIndex
from embedlib.serving.loadtest import write_manifest, write_neighbors, write_version
from embedlib.serving.service import create_app
from embedlib.serving.vectors import VectorsError

IDS = [f"i{j}" for j in range(120)]
K = 5
CFG = ServeConfig(backend="numpy", batch_wait_ms=1)


@pytest.fixture
def versions(tmp_path):
    """(follower serving a version with neighbours, follower serving the same without)."""
    root = str(tmp_path / "_manifests")
    vectors = np.random.default_rng(11).standard_normal((len(IDS), 6)).astype(np.float32)
    plain = write_version(root, "2024-01-01", tmp_path / "v1", IDS, vectors)
    neighbors = write_neighbors(tmp_path / "n1", EmbeddingIndex(IDS, vectors, backend="numpy"), K)
    with_neighbors = write_manifest(root, manifest.Manifest(**{
        **plain.__dict__, "registration": manifest.new_registration(), "neighbors": neighbors}))
    assert manifest.latest_manifest(root, "item") == with_neighbors
    return (VersionFollower(load_version(with_neighbors, CFG), CFG, root=root),
            VersionFollower(load_version(plain, CFG), CFG, root=root))


def test_precomputed_answers_equal_the_exact_search(versions):
    fast, exact = (TestClient(create_app(f, CFG)) for f in versions)
    assert fast.get("/health").json()["precomputed"] == {"k": K, "metric": "cosine"}
    for item in ("i0", "i7", "i119"):
        for k in (1, 3, K):
            a = fast.get("/similar", params={"id": item, "k": k}).json()
            b = exact.get("/similar", params={"id": item, "k": k}).json()
            assert (a["source"], b["source"]) == ("precomputed", "exact")
            assert [n["id"] for n in a["neighbors"]] == [n["id"] for n in b["neighbors"]]
            np.testing.assert_allclose([n["score"] for n in a["neighbors"]],
                                       [n["score"] for n in b["neighbors"]], rtol=1e-5)
    a = fast.post("/similar", json={"ids": ["i1", "i2"], "k": 4}).json()
    b = exact.post("/similar", json={"ids": ["i1", "i2"], "k": 4}).json()
    assert a["source"] == "precomputed" and [[n["id"] for n in row] for row in a["neighbors"]] == \
        [[n["id"] for n in row] for row in b["neighbors"]]


@pytest.mark.parametrize("params", [{"k": K + 1}, {"metric": "dot"}, {"exclude_self": "false"}])
def test_what_the_table_cannot_answer_goes_to_the_exact_search(versions, params):
    fast, exact = (TestClient(create_app(f, CFG)) for f in versions)
    a = fast.get("/similar", params={"id": "i3", **params}).json()
    assert a["source"] == "exact" and a == exact.get("/similar", params={"id": "i3", **params}).json()
    assert fast.get("/similar", params={"id": "nope"}).status_code == 404
    batch = fast.post("/similar", json={"ids": ["i1", "nope"], "k": 2})
    assert batch.status_code == 404  # unknown ids: the exact search's policy (error)


def test_neighbours_that_do_not_match_the_vectors_keep_the_version_out(tmp_path):
    root = str(tmp_path / "_manifests")
    vectors = np.random.default_rng(2).standard_normal((len(IDS), 4)).astype(np.float32)
    foreign = write_neighbors(tmp_path / "x", EmbeddingIndex([f"x{j}" for j in range(60)], vectors[:60],
                                                             backend="numpy"), 3)
    other_ids = write_version(root, "2024-01-01", tmp_path / "v", IDS, vectors, neighbors=foreign)
    with pytest.raises(VectorsError, match="name ids that the version's vectors do not hold"):
        load_version(other_ids, CFG)
    half = write_neighbors(tmp_path / "n", EmbeddingIndex(IDS[:60], vectors[:60], backend="numpy"), 3)
    wrong_rows = write_version(root, "2024-01-02", tmp_path / "v", IDS, vectors, neighbors={**half, "n_rows": 120})
    with pytest.raises(VectorsError, match="hold 60 rows, the manifest recorded 120"):
        load_version(wrong_rows, CFG)
    # a table of some of the ids answers for those; the others go to the exact search
    served = load_version(write_version(root, "2024-01-03", tmp_path / "v", IDS, vectors, neighbors=half), CFG)
    client = TestClient(create_app(VersionFollower(served, CFG, root=root), CFG))
    assert client.get("/similar", params={"id": "i1", "k": 2}).json()["source"] == "precomputed"
    assert client.get("/similar", params={"id": "i99", "k": 2}).json()["source"] == "exact"
