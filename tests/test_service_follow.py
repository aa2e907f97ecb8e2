"""Hot swap: the service follows the version manifests, verifies a new version before
switching, keeps the old one when that fails, and swaps under load with no failed request."""
import json
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from embedlib import manifest
from embedlib.config import ServeConfig
from embedlib.serving.follow import VersionFollower, load_version
from embedlib.serving.limits import VERSION_HEADER
from embedlib.serving.loadtest import closed_loop, free_port, thread_server, write_version
from embedlib.serving.service import create_app

IDS = [f"i{j}" for j in range(200)]
LOCAL = ("127.0.0.1", 50000)


def vectors_of(version: int) -> np.ndarray:
    """Each version's vectors differ, so an answer shows which version computed it."""
    return np.random.default_rng(version).standard_normal((len(IDS), 8)).astype(np.float32)


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "_manifests")


def publish(root, tmp_path, n: int, dt: str | None = None, **fields):
    return write_version(root, dt or f"2024-01-{n:02d}", tmp_path / f"v{n}", IDS, vectors_of(n), **fields)


def follower_on(root, cfg=None, signal_path=None):
    cfg = cfg or ServeConfig(backend="numpy", batch_wait_ms=1)
    first = load_version(manifest.latest_manifest(root, "item"), cfg)
    return VersionFollower(first, cfg, root=root, signal_path=signal_path)


def test_manifests_list_and_latest(root, tmp_path):
    with pytest.raises(manifest.ManifestError, match="no version manifest"):
        manifest.latest_manifest(root, "item")
    publish(root, tmp_path, 2)
    publish(root, tmp_path, 10)
    (tmp_path / "_manifests" / "item" / "_tmp-abc.json").write_text("{")  # a write in progress
    assert manifest.list_dts(root, "item") == ["2024-01-02", "2024-01-10"]
    assert manifest.latest_manifest(root, "item").location == str(tmp_path / "v10")
    (tmp_path / "_manifests" / "item" / "dt=2024-01-11.json").write_text('{"dt": "x"}')
    with pytest.raises(manifest.ManifestError, match="not a valid version manifest"):
        manifest.latest_manifest(root, "item")


def test_admin_reload_swaps_and_every_answer_names_its_version(root, tmp_path):
    publish(root, tmp_path, 1)
    client = TestClient(create_app(follower_on(root), ServeConfig(batch_wait_ms=1)), client=LOCAL)
    before = client.get("/vector", params={"id": "i5"})
    assert before.headers[VERSION_HEADER] == "2024-01-01"
    np.testing.assert_allclose(before.json()["vector"], vectors_of(1)[5])
    unchanged = client.post("/admin/reload").json()
    assert unchanged["changed"] is False and unchanged["version"] == "2024-01-01"
    publish(root, tmp_path, 2)
    swapped = client.post("/admin/reload")
    assert swapped.status_code == 200 and swapped.json()["changed"] is True
    after = client.get("/vector", params={"id": "i5"})
    assert after.headers[VERSION_HEADER] == "2024-01-02"
    np.testing.assert_allclose(after.json()["vector"], vectors_of(2)[5])
    health = client.get("/health").json()
    assert health["version"] == "2024-01-02" and health["reloads"] == 1
    assert health["loaded_at"] and health["last_reload_error"] is None
    assert health["location"] == str(tmp_path / "v2")


@pytest.mark.parametrize("damage,says", [
    ({"n_rows": 199}, "200 rows where the registry recorded 199"),
    ({"fingerprint": "crc32sum:1"}, "id fingerprint crc32sum:"),
    ({"location": "/nonexistent/v3"}, "does not exist"),
])
def test_a_version_that_fails_to_load_or_verify_is_not_served(root, tmp_path, damage, says):
    publish(root, tmp_path, 1)
    client = TestClient(create_app(follower_on(root), ServeConfig(batch_wait_ms=1)), client=LOCAL)
    publish(root, tmp_path, 3, **damage)
    failed = client.post("/admin/reload")
    assert failed.status_code == 409 and says in failed.json()["error"]["message"]
    health = client.get("/health").json()
    assert health["version"] == "2024-01-01" and says in health["last_reload_error"]["message"]
    served = client.get("/vector", params={"id": "i5"})
    assert served.status_code == 200 and served.headers[VERSION_HEADER] == "2024-01-01"
    publish(root, tmp_path, 4)  # a good newer version clears the error
    assert client.post("/admin/reload").json()["changed"] is True
    assert client.get("/health").json()["last_reload_error"] is None


def test_admin_reload_is_loopback_only_or_needs_the_token(root, tmp_path):
    publish(root, tmp_path, 1)
    app = create_app(follower_on(root), ServeConfig(batch_wait_ms=1))
    assert TestClient(app, client=("10.1.2.3", 4000)).post("/admin/reload").status_code == 403
    assert TestClient(app, client=LOCAL).post("/admin/reload").status_code == 200
    with_token = create_app(follower_on(root), ServeConfig(admin_token="s3cret", batch_wait_ms=1))
    remote = TestClient(with_token, client=("10.1.2.3", 4000))
    assert remote.post("/admin/reload").status_code == 403
    assert remote.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert remote.post("/admin/reload", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_a_path_service_has_nothing_to_reload(tmp_path):
    from embedlib.serving import EmbeddingIndex

    client = TestClient(create_app(EmbeddingIndex(IDS, vectors_of(1), backend="numpy"),
                                   version="p"), client=LOCAL)
    response = client.post("/admin/reload")
    assert response.status_code == 409 and "no manifests" in response.json()["detail"]


def test_follow_latest_polls_and_swaps_by_itself(root, tmp_path):
    publish(root, tmp_path, 1)
    cfg = ServeConfig(backend="numpy", follow="latest", poll_seconds=0.1, batch_wait_ms=1)
    with TestClient(create_app(follower_on(root, cfg), cfg)) as client:
        publish(root, tmp_path, 2)
        end = time.monotonic() + 20
        while client.get("/health").json()["version"] != "2024-01-02" and time.monotonic() < end:
            time.sleep(0.05)
        assert client.get("/health").json()["version"] == "2024-01-02"


def test_swaps_under_load_fail_no_request(root, tmp_path):
    """3 swaps while 8 clients send /similar and /vectors: every answer is a 200, and its
    content is that of the version its header names (no answer mixes or loses versions)."""
    for n in (1, 2, 3, 4):
        publish(root, tmp_path / "all", n)
    for n in (2, 3, 4):  # only version 1 is visible at start
        (tmp_path / "_manifests" / "item" / f"dt=2024-01-{n:02d}.json").rename(tmp_path / f"m{n}")
    follower = follower_on(root)
    port = free_port()
    server, thread = thread_server(create_app(follower, ServeConfig(batch_wait_ms=1)), port)
    rng = np.random.default_rng(0)
    asked = rng.integers(0, len(IDS), 2400)
    requests = [("GET", f"/similar?id=i{j}&k=3", None) if n % 2 else
                ("POST", "/vectors", json.dumps({"ids": [f"i{j}"]}).encode())
                for n, j in enumerate(asked)]
    try:
        def swap_three_times():
            for n in (2, 3, 4):
                time.sleep(0.3)
                (tmp_path / f"m{n}").rename(tmp_path / "_manifests" / "item" / f"dt=2024-01-{n:02d}.json")
                assert follower.request_reload_everywhere()["changed"] is True
        swapper = threading.Thread(target=swap_three_times)
        swapper.start()
        result = closed_loop(port, requests, concurrency=8, max_seconds=120, keep_bodies=True)
        swapper.join()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert len(result.statuses) == len(requests) and result.failed == 0, result.errors[:3]
    assert set(result.versions) >= {"2024-01-01", "2024-01-04"}
    indexes = {f"2024-01-{n:02d}": vectors_of(n) for n in (1, 2, 3, 4)}
    for (j, body), version in zip(result.bodies, result.versions):
        answer = json.loads(body)
        if "vectors" in answer:
            np.testing.assert_allclose(answer["vectors"][0], indexes[version][asked[j]], rtol=1e-6)
        else:
            vecs = indexes[version]
            unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
            scores = unit @ unit[asked[j]]
            scores[asked[j]] = -np.inf
            assert answer["neighbors"][0]["id"] == f"i{int(np.argmax(scores))}"


def test_a_rerun_of_the_served_dt_is_newer_and_an_older_dt_never_replaces_it(root, tmp_path, caplog):
    publish(root, tmp_path, 1)
    publish(root, tmp_path, 2)
    follower = follower_on(root)
    assert follower.current.version == "2024-01-02"
    # a rerun of an older dt is not newer than the served version
    publish(root, tmp_path, 11, dt="2024-01-01", registration=manifest.new_registration())
    assert follower.reload()["changed"] is False
    # a rerun of the served dt is: its manifest sits beside the old one until that is removed
    rerun = publish(root, tmp_path, 12, dt="2024-01-02", registration=manifest.new_registration())
    assert manifest.latest_manifest(root, "item") == rerun
    assert follower.reload()["changed"] is True
    assert follower.current.location == str(tmp_path / "v12")
    assert follower.reload()["changed"] is False
    # the served dt unregistered (no manifest of it left): back to the newest one, said once
    for path in (tmp_path / "_manifests" / "item").glob("dt=2024-01-02*"):
        path.unlink()
    with caplog.at_level("WARNING", logger="embedlib.serving.follow"):
        assert follower.reload()["changed"] is True
    assert follower.current.version == "2024-01-01" and follower.current.location == str(tmp_path / "v11")
    assert [r.message for r in caplog.records if "unregistered" in r.message] == [
        f"version 2024-01-02 was unregistered, falling back: loading version 2024-01-01 from {tmp_path / 'v11'}"]


def test_manifest_names_order_registrations_and_old_names_still_read(root, tmp_path):
    old = publish(root, tmp_path, 3)  # a manifest written before registrations were named
    assert (tmp_path / "_manifests" / "item" / "dt=2024-01-03.json").exists() and old.registration == ""
    text = json.loads((tmp_path / "_manifests" / "item" / "dt=2024-01-03.json").read_text())
    del text["registration"]
    (tmp_path / "_manifests" / "item" / "dt=2024-01-03.json").write_text(json.dumps(text))
    assert manifest.read_manifest(root, "item", "2024-01-03") == old
    first, second = manifest.new_registration(), manifest.new_registration()
    assert first < second
    publish(root, tmp_path, 4, dt="2024-01-03", registration=second)
    publish(root, tmp_path, 5, dt="2024-01-03", registration=first)
    assert manifest.list_dts(root, "item") == ["2024-01-03"]
    assert manifest.read_manifest(root, "item", "2024-01-03").location == str(tmp_path / "v4")


def wait_for(condition, seconds: float = 20.0):
    end = time.monotonic() + seconds
    while not condition() and time.monotonic() < end:
        time.sleep(0.05)
    return condition()


def test_the_poll_survives_any_error_and_health_says_degraded_until_a_check_succeeds(root, tmp_path, monkeypatch):
    publish(root, tmp_path, 1)
    cfg = ServeConfig(backend="numpy", follow="latest", poll_seconds=0.1, batch_wait_ms=1)
    follower = follower_on(root, cfg)
    latest = manifest.latest_manifest

    def broken(*args):
        raise RuntimeError("cuda driver gone")  # none of the errors a load is expected to raise
    with TestClient(create_app(follower, cfg)) as client:
        monkeypatch.setattr(manifest, "latest_manifest", broken)
        assert wait_for(lambda: client.get("/health").json()["status"] == "degraded")
        health = client.get("/health").json()
        assert "RuntimeError: cuda driver gone" in health["last_reload_error"]["message"]
        assert health["version"] == "2024-01-01" and health["poll_thread"] == "running"
        monkeypatch.setattr(manifest, "latest_manifest", latest)
        publish(root, tmp_path, 2)
        assert wait_for(lambda: client.get("/health").json()["version"] == "2024-01-02")
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["last_success_at"] and health["last_reload_error"] is None


def test_a_manifest_that_failed_to_load_is_retried_with_backoff(root, tmp_path, monkeypatch):
    from embedlib.serving import follow

    publish(root, tmp_path, 1)
    cfg = ServeConfig(backend="numpy", follow="latest", poll_seconds=0.1, batch_wait_ms=1)
    follower = follower_on(root, cfg)
    attempts = []
    load = follow.load_version

    def flaky(m, cfg):  # the namenode answers again after three tries
        attempts.append(time.monotonic())
        if len(attempts) <= 3:
            raise OSError("namenode unreachable")
        return load(m, cfg)
    monkeypatch.setattr(follow, "load_version", flaky)
    publish(root, tmp_path, 2)
    follower.start()
    try:
        assert wait_for(lambda: follower.current.version == "2024-01-02")
    finally:
        follower.stop()
    gaps = np.diff(attempts)
    assert len(attempts) == 4 and gaps[1] >= 0.19 and gaps[2] >= 0.39  # backoff 0.1, 0.2, 0.4 s
    assert follower.status()["status"] == "ok"


def test_a_stopped_poll_thread_is_reported(root, tmp_path):
    publish(root, tmp_path, 1)
    cfg = ServeConfig(backend="numpy", follow="latest", poll_seconds=0.1, batch_wait_ms=1)
    follower = follower_on(root, cfg)
    follower._thread = threading.Thread(target=lambda: None)  # a poll thread that has ended
    follower._thread.start()
    follower._thread.join()
    status = follower.status()
    assert status["status"] == "degraded" and status["poll_thread"] == "stopped"
