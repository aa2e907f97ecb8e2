"""Stabilize step on user-supplied (id, vector) Parquet: maths, chaining, bad input, gates."""
import shutil

import numpy as np
import pytest

from embedlib import registry, tables
from embedlib.alignment import StabilizeError
from embedlib.linalg import LinalgError
from embedlib.steps import stabilize as step
from tests.helpers import two_tower, write_vectors

D1, D2 = "2024-03-01", "2024-03-02"


def published(spark, cfg, dt, side="item"):
    rows = tables.read_partition(spark, tables.embeddings_table(cfg.tables, side), dt).collect()
    return {r.id: np.array(r.vector, dtype=np.float64) for r in rows}


def matrix(d, n):
    return np.array([d[f"i{k}"] for k in range(n)])


def test_root_then_chained_version_recovers_the_same_space(spark, cfg_factory, tmp_path, rng):
    t = rng.normal(size=(300, 8)) * np.linspace(3, 1, 8)
    w = rng.normal(size=(200, 8))
    cfg1 = cfg_factory(**two_tower(tmp_path, "v1", t, w))
    s1 = step.run(spark, cfg1, D1)
    assert s1["root_reason"] == "no previous version" and s1["mode"] == "canonicalize_align"
    t1, w1 = matrix(published(spark, cfg1, D1), 300), matrix(published(spark, cfg1, D1, "user"), 200)
    np.testing.assert_allclose(t1 @ w1.T, t @ w.T, atol=1e-5 * np.abs(t @ w.T).max())
    assert s1["score_max_rel_err"] < 1e-5
    # Version 2: same scores, vectors scrambled by an invertible map (what a retrain does).
    a = rng.normal(size=(8, 8))
    cfg2 = cfg_factory(**two_tower(tmp_path, "v2", t @ a, w @ np.linalg.inv(a).T))
    cfg2.tables = cfg1.tables
    s2 = step.run(spark, cfg2, D2)
    assert s2["parent_dt"] == D1 and s2["root_reason"] is None
    assert s2["cosine_raw_mean"] < 0.5 < 0.999 < s2["cosine_stabilized_mean"]
    t2 = matrix(published(spark, cfg2, D2), 300)
    np.testing.assert_allclose(t2, t1, atol=1e-4 * np.abs(t1).max())
    rec = registry.read_version(spark, cfg2, D2)
    assert set(rec) == {"item", "user"} and rec["item"].parent_dt == D1 and not rec["item"].root
    assert rec["item"].n_rows == 300 and rec["item"].metrics["rows_joined"] == 300
    # Where the time went, phase by phase, and how many Spark jobs it took (a root skips the
    # parent's phases).
    assert {"extract", "gram", "score_sample", "write_item", "write_user", "delta", "register"} <= set(
        s1["phase_seconds"]) and "join_cross_gram" not in s1["phase_seconds"]
    assert {"join_cross_gram", "same_id"} <= set(s2["phase_seconds"])
    assert all(v >= 0 for v in s2["phase_seconds"].values())
    assert sum(s2["phase_seconds"].values()) <= s2["seconds"] + 1e-6
    assert s2["spark_jobs"] > s1["spark_jobs"] > 5


def test_arrow_and_spark_vector_io_give_the_same_version(spark, cfg_factory, tmp_path, rng):
    """tables.vector_io=arrow (the tasks read the files with pyarrow, the join moves binary
    vectors) and =spark (Spark's reader, array<float> throughout) publish the same thing."""
    t, w = rng.normal(size=(300, 8)) * np.linspace(3, 1, 8), rng.normal(size=(200, 8))
    a = rng.normal(size=(8, 8))
    t2, w2 = (t @ a + 0.1 * rng.normal(size=t.shape))[:280], w @ np.linalg.inv(a).T  # 20 items carried
    summaries, vectors = {}, {}
    for io in ("arrow", "spark"):
        cfg = cfg_factory(**two_tower(tmp_path, f"{io}1", t, w), tables={"vector_io": io})
        step.run(spark, cfg, D1)
        cfg2 = cfg_factory(**two_tower(tmp_path, f"{io}2", t2, w2), tables={"vector_io": io})
        cfg2.tables = cfg.tables
        inputs = step.extract(spark, cfg2, D2)
        files = [inputs.items.source, inputs.items.prev_source, inputs.other.source, inputs.other.prev_source]
        assert all(f is not None for f in files) if io == "arrow" else all(f is None for f in files)
        summaries[io] = step.run(spark, cfg2, D2)
        assert summaries[io]["carried"]["item"] == 20
        vectors[io] = matrix(published(spark, cfg2, D2), 300)
    np.testing.assert_allclose(vectors["arrow"], vectors["spark"], atol=1e-6 * np.abs(vectors["spark"]).max())
    keys = ["cosine_raw_mean", "cosine_stabilized_mean", "cosine_stabilized_median", "alignment_residual",
            "score_max_rel_err", "rows_joined", "neighbour_overlap_at_10", "neighbour_churn_share"]
    for key in keys:
        assert summaries["arrow"][key] == pytest.approx(summaries["spark"][key], rel=1e-6, abs=1e-9), key
    assert summaries["arrow"]["most_changed"] == summaries["spark"]["most_changed"]


def test_align_only_recovers_rotation_and_keeps_cosines(spark, cfg_factory, tmp_path, rng):
    a = rng.normal(size=(400, 6))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    cfg = cfg_factory(stabilize={"mode": "align", "items": {"path": write_vectors(tmp_path / "a.parquet", a)}})
    step.run(spark, cfg, D1)
    b = a @ q + 0.001 * rng.normal(size=(400, 6))
    cfg.stabilize.items.path = write_vectors(tmp_path / "b.parquet", b)
    summary = step.run(spark, cfg, D2)
    out = matrix(published(spark, cfg, D2), 400)
    np.testing.assert_allclose(out, a, atol=0.01)
    np.testing.assert_allclose(out @ out.T, b @ b.T, atol=1e-4 * np.abs(b @ b.T).max())
    assert summary["alignment_residual"] < 0.01 and summary["neighbour_overlap_at_10"] > 0.9
    assert summary["neighbour_churn_share"] == 0.0 and summary["overlap_queries"] == 400


def test_rank_deficient_input_publishes_no_nan(spark, cfg_factory, tmp_path, rng):
    base = rng.normal(size=(100, 3))
    t = np.hstack([base, base[:, :2], np.zeros((100, 1))])  # rank 3 of 6
    cfg = cfg_factory(**two_tower(tmp_path, "rd", t, rng.normal(size=(80, 6))))
    summary = step.run(spark, cfg, D1)
    assert summary["rank"] == 3 and summary["factor_items"] == "eigh"
    out = matrix(published(spark, cfg, D1), 100)
    assert np.isfinite(out).all() and np.allclose(out[:, 3:], 0)
    cfg.stabilize.on_rank_deficient = "error"
    with pytest.raises(LinalgError, match="rank deficient: numerical rank 3 of 6"):
        step.run(spark, cfg, D2)


@pytest.mark.parametrize("bad, message", [
    ([float("nan")] * 4, r"1 of 50 vectors are null, not of length 4, or have NaN/Inf \(e.g. ids \['i7'\]\)"),
    ([1.0, 2.0], r"not of length 4"),
])
def test_bad_vectors_stop_or_are_dropped(spark, cfg_factory, tmp_path, bad, message, rng):
    x = [list(v) for v in rng.normal(size=(50, 4))]
    x[7] = bad
    cfg = cfg_factory(stabilize={"mode": "align", "items": {"path": write_vectors(tmp_path / "x.parquet", x)}})
    with pytest.raises(StabilizeError, match=message):
        step.run(spark, cfg, D1)
    assert registry.registered_dts(spark, cfg) == []
    cfg.stabilize.on_invalid_vectors = "drop"
    step.run(spark, cfg, D1)
    assert len(published(spark, cfg, D1)) == 49


def test_duplicate_ids_are_an_error(spark, cfg_factory, tmp_path, rng):
    path = write_vectors(tmp_path / "d.parquet", rng.normal(size=(3, 2)), ids=["a", "b", "a"])
    cfg = cfg_factory(stabilize={"mode": "align", "items": {"path": path}})
    with pytest.raises(StabilizeError, match=r"ids must be unique.*\('a', 2\)"):
        step.run(spark, cfg, D1)


def test_empty_overlap_and_dimension_change(spark, cfg_factory, tmp_path, rng):
    items = write_vectors(tmp_path / "1.parquet", rng.normal(size=(40, 4)))
    cfg = cfg_factory(stabilize={"mode": "align", "items": {"path": items}})
    step.run(spark, cfg, D1)
    cfg.stabilize.items.path = write_vectors(tmp_path / "2.parquet", rng.normal(size=(40, 4)),
                                             ids=[f"new{k}" for k in range(40)])
    with pytest.raises(StabilizeError, match=r"only 0 of 40 item ids are in the parent version"):
        step.run(spark, cfg, D2)
    assert registry.registered_dts(spark, cfg) == [D1]
    cfg.stabilize.on_low_overlap = "new_root"
    assert step.run(spark, cfg, D2)["root_reason"] == "low overlap"
    cfg.stabilize.items.path = write_vectors(tmp_path / "3.parquet", rng.normal(size=(40, 5)))
    with pytest.raises(StabilizeError, match="dimension changed from 4 to 5"):
        step.run(spark, cfg, "2024-03-03")
    cfg.stabilize.on_dim_change = "new_root"
    summary = step.run(spark, cfg, "2024-03-03")
    assert summary["root_reason"] == "dimension change 4->5" and summary["parent_dt"] is None


def test_quality_gate_stops_before_publishing(spark, cfg_factory, tmp_path, rng):
    items = write_vectors(tmp_path / "1.parquet", rng.normal(size=(60, 4)))
    cfg = cfg_factory(stabilize={"mode": "align", "items": {"path": items}})
    step.run(spark, cfg, D1)
    cfg.stabilize.items.path = write_vectors(tmp_path / "2.parquet", rng.normal(size=(60, 4)))
    cfg.stabilize.min_stabilized_cosine = 0.9
    with pytest.raises(StabilizeError, match="quality gate: mean stabilized same-id cosine"):
        step.run(spark, cfg, D2)
    assert registry.registered_dts(spark, cfg) == [D1]
    assert tables.list_partitions(spark, tables.embeddings_table(cfg.tables, "item")) == [D1]


def test_parent_data_deleted_but_registered_is_a_clear_error(spark, cfg_factory, tmp_path, rng):
    items = write_vectors(tmp_path / "1.parquet", rng.normal(size=(30, 4)))
    cfg = cfg_factory(stabilize={"mode": "align", "items": {"path": items}})
    step.run(spark, cfg, D1)
    location = registry.read_version(spark, cfg, D1)["item"].location
    shutil.rmtree(location.removeprefix("file:"))
    with pytest.raises(registry.RegistryError, match=f"version {D1} \\(item\\) is registered but its data"):
        step.run(spark, cfg, D2)


def test_neighbour_overlap_is_one_under_rotation_and_low_for_unrelated_vectors(rng):
    from benchmarks.common import neighbour_overlap

    a = rng.normal(size=(300, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert neighbour_overlap(a, a @ q * 3.0, 10, 50) == pytest.approx(1.0)
    assert neighbour_overlap(a, rng.normal(size=(300, 8)), 10, 50) < 0.2
