"""Faults of the lookup service that must never leave a request without an answer: a
micro-batching thread that could die (a cancelled waiter, an error in any step), a request
that takes too long (503), and a poll thread that could die silently."""
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from embedlib.config import ConfigError, ServeConfig
from embedlib.serving import EmbeddingIndex, batching
from embedlib.serving.batching import MicroBatcher
from embedlib.serving.follow import ServedVersion
from embedlib.serving.service import create_app

IDS = [f"i{j}" for j in range(50)]


@pytest.fixture
def served():
    vectors = np.random.default_rng(0).standard_normal((len(IDS), 4)).astype(np.float32)
    return ServedVersion.of(EmbeddingIndex(IDS, vectors, backend="numpy"), "v1")


def test_a_request_cancelled_while_it_waits_does_not_stop_the_batcher(served):
    batcher = MicroBatcher(wait_s=0.3, max_batch=64)
    gone = batcher.submit(served, "i1", 3, None, True)
    assert gone.cancel()  # its waiter gave up (a timeout, a shutdown) before the batch ran
    time.sleep(0.5)
    answer = batcher.submit(served, "i2", 3, None, True).result(timeout=10)
    assert answer.ids.shape == (1, 3) and batcher.stats()["restarts"] == 0


def test_an_error_in_any_step_of_a_batch_reaches_its_requests_and_the_next_ones_are_answered(served, monkeypatch):
    batcher = MicroBatcher(wait_s=0.001, max_batch=64)
    monkeypatch.setattr(served.index, "rows_of", lambda ids: (_ for _ in ()).throw(MemoryError("rows")))
    with pytest.raises(MemoryError, match="rows"):
        batcher.submit(served, "i1", 3, None, True).result(timeout=10)
    monkeypatch.undo()
    assert batcher.submit(served, "i2", 3, None, True).result(timeout=10).ids.shape == (1, 3)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_batcher_thread_that_ended_anyway_is_restarted(served, monkeypatch, caplog):
    batcher = MicroBatcher(wait_s=0.001, max_batch=64)

    def die(group):
        raise SystemExit  # not an Exception: ends the thread
    monkeypatch.setattr(batching, "_answer_or_fail", die)
    lost = batcher.submit(served, "i1", 3, None, True)
    batcher._thread.join(timeout=10)
    monkeypatch.undo()
    lost.cancel()
    with caplog.at_level("ERROR", logger="embedlib.serving.batching"):
        assert batcher.submit(served, "i2", 3, None, True).result(timeout=10).ids.shape == (1, 3)
    assert batcher.stats()["restarts"] == 1 and "restarted" in caplog.text


@pytest.mark.parametrize("batch_wait_ms", [1, 0])
def test_a_similar_request_over_the_timeout_answers_503(served, monkeypatch, batch_wait_ms):
    cfg = ServeConfig(backend="numpy", batch_wait_ms=batch_wait_ms, request_timeout_s=0.2)
    client = TestClient(create_app(served.index, cfg, version="v1"))
    release = threading.Event()
    slow_topk = served.index.topk

    def stuck(*args, **kwargs):
        release.wait(10)
        return slow_topk(*args, **kwargs)
    monkeypatch.setattr(served.index, "topk", stuck)
    late = client.get("/similar", params={"id": "i1", "k": 3})
    assert late.status_code == 503 and late.headers["retry-after"] == "1"
    assert "serve.request_timeout_s=0.2" in late.json()["detail"]
    assert client.post("/similar", json={"ids": ["i1"], "k": 3}).status_code == 503
    release.set()
    monkeypatch.undo()
    time.sleep(0.3)  # the abandoned work ends; the service answers again
    assert client.get("/similar", params={"id": "i1", "k": 3}).status_code == 200
    assert client.post("/similar", json={"ids": ["i1"], "k": 3}).status_code == 200


def test_request_timeout_must_be_positive():
    with pytest.raises(ConfigError, match="serve.request_timeout_s"):
        ServeConfig(request_timeout_s=0)
