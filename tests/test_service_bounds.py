"""Request bounds of the lookup service: each bound answers 413/422 with a short message that
never echoes the input; NaN/Inf anywhere in a request is a 422, never a 500."""
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from embedlib.config import ServeConfig
from embedlib.serving import EmbeddingIndex
from embedlib.serving.limits import VERSION_HEADER
from embedlib.serving.service import create_app

IDS = [f"i{j}" for j in range(50)]
VECTORS = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
CFG = ServeConfig(k=2, max_k=20, max_body_bytes=4096, max_id_length=16, max_batch_ids=40,
                  max_neighbors=100, max_response_bytes=20_000, batch_wait_ms=1)


@pytest.fixture(scope="module")
def client():
    index = EmbeddingIndex(IDS, VECTORS, backend="numpy", unknown_ids="skip")
    with TestClient(create_app(index, CFG, version="2024-01-10")) as c:
        yield c


def post_raw(client, path, text):
    return client.post(path, content=text.encode(), headers={"content-type": "application/json"})


def assert_refused(response, status, says, not_echoed=None):
    assert response.status_code == status, response.text[:300]
    assert len(response.content) < 2000
    assert says in response.text
    if not_echoed:
        assert not_echoed not in response.text
    assert response.headers[VERSION_HEADER] == "2024-01-10"


def test_body_over_the_bound_is_413_whether_announced_or_streamed(client):
    big_id = "x" * 5000
    assert_refused(client.post("/vectors", json={"ids": [big_id]}), 413, "max_body_bytes", big_id)

    def chunks():  # no Content-Length: counted as it streams in
        yield b'{"ids": ["'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"]}'
    streamed = client.post("/vectors", content=chunks(), headers={"content-type": "application/json"})
    assert_refused(streamed, 413, "max_body_bytes", "y" * 1000)


def test_long_id_is_422_without_echo(client):
    long_id = "z" * 17
    assert_refused(client.get("/vector", params={"id": long_id}), 422, "max_id_length", long_id)
    assert_refused(client.get("/similar", params={"id": long_id}), 422, "max_id_length", long_id)
    assert_refused(client.post("/vectors", json={"ids": ["i1", long_id]}), 422, "max_id_length", long_id)
    assert client.get("/vector", params={"id": "z" * 16}).status_code == 404  # at the bound: looked up


def test_batch_size_bound(client):
    assert_refused(client.post("/vectors", json={"ids": IDS[:41]}), 422, "max_batch_ids")
    assert client.post("/vectors", json={"ids": IDS[:40]}).status_code == 200


def test_ids_times_k_bound(client):
    assert_refused(client.post("/similar", json={"ids": IDS[:11], "k": 10}), 422, "max_neighbors")
    assert client.post("/similar", json={"ids": IDS[:10], "k": 10}).status_code == 200


def test_response_size_bound(client):
    # 40 ids x 8 floats x 24 bytes (worst case) + ids: under 20,000 bytes; with k=2 neighbours
    # of ids up to 3 characters, 40 x 2 x (12 x 3 + 45) also fits; a tighter bound refuses both.
    tight = ServeConfig(max_response_bytes=2000, batch_wait_ms=0)
    small = TestClient(create_app(EmbeddingIndex(IDS, VECTORS, backend="numpy"), tight, version="v"))
    for refused in (small.post("/vectors", json={"ids": IDS[:20]}),
                    small.post("/similar", json={"ids": IDS[:20], "k": 5})):
        assert refused.status_code == 422 and "max_response_bytes" in refused.text
    assert small.post("/vectors", json={"ids": IDS[:2]}).status_code == 200


@pytest.mark.parametrize("body", [
    '{"ids": ["i1"], "k": NaN}', '{"ids": ["i1"], "k": Infinity}', '{"ids": ["i1"], "k": -Infinity}',
    '{"ids": [NaN]}', '{"ids": ["i1"], "exclude_self": NaN}', '{"ids": ["i1"], "metric": NaN}',
    '{"ids": ["i1"], "other": NaN}', '{"ids": ["i1"], "k": 1e9}',
])
def test_nan_inf_and_huge_k_in_a_batch_request_are_422(client, body):
    response = post_raw(client, "/similar", body)
    assert response.status_code == 422, response.text
    json.loads(response.text)  # valid JSON: nothing non-finite was echoed back
    assert "NaN" not in response.text and "Infinity" not in response.text


@pytest.mark.parametrize("k", ["nan", "inf", "-inf", "1e9", "0"])
def test_nan_and_bad_k_in_a_query_are_422(client, k):
    assert client.get("/similar", params={"id": "i1", "k": k}).status_code == 422


def test_vectors_nan_is_422(client):
    assert post_raw(client, "/vectors", '{"ids": ["i1"], "k": NaN}').status_code == 422
    assert post_raw(client, "/vectors", '{"ids": NaN}').status_code == 422


def test_version_header_on_answers_and_errors(client):
    for response in (client.get("/health"), client.get("/similar", params={"id": "i1"}),
                     client.get("/vector", params={"id": "nope"}), client.get("/similar")):
        assert response.headers[VERSION_HEADER] == "2024-01-10"


def test_micro_batched_answers_equal_direct_topk(client):
    index = EmbeddingIndex(IDS, VECTORS, backend="numpy")
    from concurrent.futures import ThreadPoolExecutor

    def ask(j):
        return client.get("/similar", params={"id": IDS[j], "k": 1 + j % 5}).json()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(len(IDS))))
    for j, body in enumerate(answers):
        want = index.topk([IDS[j]], k=1 + j % 5, exclude_self=True)
        assert [n["id"] for n in body["neighbors"]] == want.ids[0].tolist()
