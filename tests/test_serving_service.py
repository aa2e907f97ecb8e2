"""The HTTP lookup service through FastAPI's TestClient: answers, 404s and 422s."""
import numpy as np
import pytest
from fastapi.testclient import TestClient

from embedlib.config import ServeConfig
from embedlib.serving import EmbeddingIndex
from embedlib.serving.service import create_app

IDS = ["a", "b", "c", "d"]
VECTORS = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], dtype=np.float32)


@pytest.fixture(scope="module")
def client():
    index = EmbeddingIndex(IDS, VECTORS, backend="numpy", unknown_ids="skip")
    return TestClient(create_app(index, ServeConfig(k=2, max_k=3), version="2024-01-10"))


def test_health_names_backend_and_version(client):
    body = client.get("/health").json()
    assert body["backend"] == "numpy" and body["device"] == "cpu"
    assert (body["rows"], body["dim"], body["version"]) == (4, 2, "2024-01-10")


def test_vector_and_unknown_vector(client):
    assert client.get("/vector", params={"id": "c"}).json() == {"id": "c", "vector": [0.0, 1.0]}
    missing = client.get("/vector", params={"id": "zz"})
    assert missing.status_code == 404 and missing.json()["unknown"] == ["zz"]
    assert client.get("/vector").status_code == 422


def test_batch_vectors_follow_the_configured_policy(client):
    body = client.post("/vectors", json={"ids": ["b", "zz", "a"]}).json()
    assert body["ids"] == ["b", "a"] and body["n_unknown"] == 1
    np.testing.assert_allclose(body["vectors"], VECTORS[[1, 0]])
    assert client.post("/vectors", json={"ids": []}).status_code == 422


def test_similar(client):
    body = client.get("/similar", params={"id": "a"}).json()
    assert [n["id"] for n in body["neighbors"]] == ["b", "c"] and body["k"] == 2
    assert body["neighbors"][0]["score"] == pytest.approx(0.9 / np.hypot(0.9, 0.1), rel=1e-6)
    assert body["neighbors"][1]["score"] == pytest.approx(0.0, abs=1e-7)
    dot = client.get("/similar", params={"id": "a", "k": 3, "metric": "dot"}).json()
    assert [n["id"] for n in dot["neighbors"]] == ["b", "c", "d"]


@pytest.mark.parametrize("params,status", [
    ({"id": "zz"}, 404), ({"id": "a", "k": 0}, 422), ({"id": "a", "k": 4}, 422),
    ({"id": "a", "k": "ten"}, 422), ({"id": "a", "metric": "l2"}, 422), ({}, 422),
])
def test_similar_errors(client, params, status):
    response = client.get("/similar", params=params)
    assert response.status_code == status
    assert "detail" in response.json()


def test_similar_batch(client):
    body = client.post("/similar", json={"ids": ["a", "zz", "c"], "k": 1}).json()
    assert body["ids"] == ["a", "c"] and body["n_unknown"] == 1
    assert [n[0]["id"] for n in body["neighbors"]] == ["b", "b"]
    too_big = client.post("/similar", json={"ids": ["a"], "k": 4})
    assert too_big.status_code == 422 and "k must be <= 3" in too_big.json()["detail"]
    with_self = client.post("/similar", json={"ids": ["a"], "k": 1, "exclude_self": False}).json()
    assert with_self["neighbors"][0][0]["id"] == "a"
