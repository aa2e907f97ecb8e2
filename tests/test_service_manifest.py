"""registry.register writes the version manifest the lookup service follows; the service
serves and verifies a registered version from it, without Spark."""
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from embedlib import integrity, manifest, registry
from embedlib.serving.follow import VersionFollower, load_version
from embedlib.serving.loadtest import write_version
from embedlib.serving.service import create_app


def record(location: str, ids, dim: int = 4) -> registry.VersionRecord:
    return registry.VersionRecord(
        side="item", dim=dim, n_rows=len(ids), n_carried=0, parent_dt=None, root=True,
        root_reason="no previous version", mode="none", metrics={}, transform=np.eye(dim),
        location=location, fingerprint=integrity.ids_fingerprint(ids))


def test_register_writes_a_manifest_per_side_and_a_rerun_replaces_it(spark, cfg_factory, tmp_path):
    cfg = cfg_factory(serve={"backend": "numpy"})
    ids = ["a", "b", "c"]
    root = manifest.manifest_root(cfg)
    assert root.endswith(f"{cfg.tables.database}.db/_manifests")
    registry.register(spark, cfg, "2024-01-10", [record(str(tmp_path / "run1"), ids)])
    first = manifest.read_manifest(root, "item", "2024-01-10")
    assert (first.dt, first.n_rows, first.dim) == ("2024-01-10", 3, 4)
    assert first.fingerprint == integrity.ids_fingerprint(ids) and first.location.endswith("run1")
    registry.register(spark, cfg, "2024-01-10", [record(str(tmp_path / "run2"), ids[:2])])
    again = manifest.latest_manifest(root, "item")
    assert again.location.endswith("run2") and again.n_rows == 2
    assert manifest.list_dts(root, "item") == ["2024-01-10"]
    # no temporary file left (Hadoop's local filesystem adds hidden .crc files)
    names = [p.name for p in (Path(root) / "item").iterdir() if not p.name.startswith(".")]
    assert names == [again.file_name] and again.registration > first.registration


def test_a_registered_version_is_served_from_its_manifest(spark, cfg_factory, tmp_path):
    cfg = cfg_factory(serve={"backend": "numpy", "batch_wait_ms": 0})
    ids = [f"i{j}" for j in range(20)]
    vectors = np.random.default_rng(3).standard_normal((20, 4)).astype(np.float32)
    # the data as a publish writes it, then the registry row (and its manifest)
    written = write_version(str(tmp_path / "scratch"), "2024-01-10", tmp_path / "run", ids, vectors)
    registry.register(spark, cfg, "2024-01-10", [record(written.location, ids)])
    root = manifest.manifest_root(cfg)
    served = load_version(manifest.latest_manifest(root, "item"), cfg.serve)
    client = TestClient(create_app(VersionFollower(served, cfg.serve, root=root), cfg.serve))
    body = client.get("/vector", params={"id": "i7"})
    assert body.headers["X-Embedlib-Version"] == "2024-01-10"
    np.testing.assert_allclose(body.json()["vector"], vectors[7])


def test_a_rerun_always_leaves_a_manifest_of_its_dt_and_unregister_removes_them(spark, cfg_factory, tmp_path,
                                                                                 monkeypatch):
    cfg = cfg_factory(serve={"backend": "numpy"})
    root = manifest.manifest_root(cfg)
    registry.register(spark, cfg, "2024-01-09", [record(str(tmp_path / "run0"), ["a"])])
    registry.register(spark, cfg, "2024-01-10", [record(str(tmp_path / "run1"), ["a", "b"])])
    seen = []
    delete = manifest._delete_manifests

    def look_then_delete(*args, **kwargs):  # what a reader sees while the old one is removed
        seen.append(manifest.latest_manifest(root, "item").location)
        return delete(*args, **kwargs)

    monkeypatch.setattr(manifest, "_delete_manifests", look_then_delete)
    registry.register(spark, cfg, "2024-01-10", [record(str(tmp_path / "run2"), ["a"])])
    assert seen == [str(tmp_path / "run2")]
    assert manifest.latest_manifest(root, "item").location == str(tmp_path / "run2")
    registry.unregister(spark, cfg, "2024-01-10")
    assert manifest.list_dts(root, "item") == ["2024-01-09"]


def test_build_neighbors_adds_its_table_to_the_manifest_and_the_service_answers_from_it(spark, cfg_factory,
                                                                                        tmp_path):
    from embedlib.steps import build_neighbors

    cfg = cfg_factory(serve={"backend": "numpy", "batch_wait_ms": 0, "neighbors_k": 4})
    ids = [f"i{j}" for j in range(30)]
    vectors = np.random.default_rng(4).standard_normal((30, 4)).astype(np.float32)
    written = write_version(str(tmp_path / "scratch"), "2024-01-10", tmp_path / "run", ids, vectors)
    registry.register(spark, cfg, "2024-01-10", [record(written.location, ids)])
    root = manifest.manifest_root(cfg)
    first = manifest.latest_manifest(root, "item")
    summary = build_neighbors.run(spark, cfg, "2024-01-10")
    m = manifest.latest_manifest(root, "item")
    assert m.registration > first.registration and m.location == first.location  # newer: the service swaps
    assert (m.neighbors["k"], m.neighbors["metric"], m.neighbors["n_rows"]) == (4, "cosine", 30)
    assert summary["manifest"].endswith(m.file_name) and manifest.list_dts(root, "item") == ["2024-01-10"]
    client = TestClient(create_app(VersionFollower(load_version(m, cfg.serve), cfg.serve, root=root), cfg.serve))
    answer = client.get("/similar", params={"id": "i3", "k": 4}).json()
    assert answer["source"] == "precomputed" and len(answer["neighbors"]) == 4
