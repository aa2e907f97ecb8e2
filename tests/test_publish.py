"""Publishing: carry-forward with TTL, deltas, reruns, previous-version resolution."""
import pytest

from embedlib import publication, registry, tables
from embedlib.steps import stabilize as step
from tests.helpers import write_vectors


def pub(spark, cfg, dt):
    df = tables.read_partition(spark, tables.embeddings_table(cfg.tables, "item"), dt)
    return {r.id: (r.carried, r.trained_dt) for r in df.collect()}


@pytest.mark.parametrize("broadcast_max", [publication.BROADCAST_IDS_MAX, 0])
def test_delta_classifies_new_evicted_moved(spark, monkeypatch, broadcast_max):
    monkeypatch.setattr(publication, "BROADCAST_IDS_MAX", broadcast_max)  # 0: the shuffle join
    cols = "id string, vector array<float>"
    today = spark.createDataFrame([("same", [1.0, 0.0]), ("moved", [0.0, 1.0]), ("new", [1.0, 1.0])], cols)
    parent = spark.createDataFrame([("same", [2.0, 0.0]), ("moved", [1.0, 0.0]), ("gone", [1.0, 0.0])], cols)
    cosines = spark.createDataFrame([("same", 1.0), ("moved", 0.0)], "id string, stabilized double")
    delta = publication.delta("item", today, parent, cosines, 0.05).collect()
    rows = {r.id: (r.change, r.cosine, r.vector) for r in delta}
    assert rows == {"moved": ("moved", 0.0, [0.0, 1.0]), "new": ("new", None, [1.0, 1.0]),
                    "gone": ("evicted", None, None)}
    assert {r.change for r in publication.delta("item", today, None, None, 0.05).collect()} == {"new"}
    # Known zero counts skip those joins; known non-zero counts change nothing.
    same = publication.delta("item", today.where("id != 'new'"), parent.where("id != 'gone'"), cosines, 0.05,
                         n_new=0, n_evicted=0)
    assert [(r.id, r.change) for r in same.collect()] == [("moved", "moved")]
    counted = publication.delta("item", today, parent, cosines, 0.05, n_new=1, n_evicted=1)
    assert {r.id: r.change for r in counted.collect()} == {k: v[0] for k, v in rows.items()}


@pytest.mark.parametrize("broadcast_max", [publication.BROADCAST_IDS_MAX, 0])
def test_with_carried_picks_parent_rows_absent_today(spark, monkeypatch, broadcast_max):
    monkeypatch.setattr(publication, "BROADCAST_IDS_MAX", broadcast_max)
    cols = "id string, vector array<float>, count long, carried boolean, trained_dt string"
    today = spark.createDataFrame([("a", [1.0], 3, False, "2024-03-05")], cols)
    parent = spark.createDataFrame([("a", [9.0], 1, False, "2024-03-04"), ("b", [2.0], 2, False, "2024-03-04"),
                                    ("old", [3.0], 1, True, "2024-01-01")], cols)
    rows = {r.id: tuple(r)[1:] for r in publication.union_carried(today, parent, "2024-03-05", 7).collect()}
    assert rows == {"a": ([1.0], 3, False, "2024-03-05"), "b": ([2.0], 2, True, "2024-03-04")}
    ids_only = publication.union_carried(today, parent, "2024-03-05", 7, today_ids=today.select("id"))
    assert sorted(r.id for r in ids_only.collect()) == ["a", "b"]
    bounded = publication.union_carried(today, parent, "2024-03-05", 7, max_carried=2)
    assert sorted(r.id for r in bounded.collect()) == ["a", "b"]


@pytest.mark.parametrize("max_carried", [None, 0])
def test_nothing_to_carry_never_reads_parent_vectors(spark, max_carried):
    cols = "id string, vector array<float>, count long, carried boolean, trained_dt string"
    today = spark.createDataFrame([("a", [1.0], 3, False, "2024-03-05")], cols)
    parent = spark.createDataFrame([("a", [9.0], 1, False, "2024-03-04")], cols).selectExpr(
        "id", "raise_error('parent vectors read') AS vector", "count", "carried", "trained_dt")
    rows = publication.union_carried(today, parent, "2024-03-05", 7, max_carried=max_carried).collect()
    assert [r.id for r in rows] == ["a"]


@pytest.mark.slow
def test_carry_forward_within_ttl_then_evict(spark, cfg_factory, tmp_path, rng):
    base = rng.normal(size=(60, 4))
    ids = [f"i{k}" for k in range(60)]
    cfg = cfg_factory(stabilize={"mode": "align", "items": {"path": write_vectors(tmp_path / "1.parquet", base, ids)}},
                      publish={"ttl_days": 1})
    step.run(spark, cfg, "2024-03-01")
    cfg.stabilize.items.path = write_vectors(tmp_path / "2.parquet", base[:50] + 0.01, ids[:50])
    s2 = step.run(spark, cfg, "2024-03-02")
    p2 = pub(spark, cfg, "2024-03-02")
    assert s2["carried"] == {"item": 10} and len(p2) == 60
    assert p2["i55"] == (True, "2024-03-01") and p2["i1"] == (False, "2024-03-02")
    cfg.stabilize.items.path = write_vectors(tmp_path / "3.parquet", base[:50], ids[:50])
    s3 = step.run(spark, cfg, "2024-03-03")
    assert s3["carried"] == {"item": 0} and len(pub(spark, cfg, "2024-03-03")) == 50
    assert s3["delta"].get("item_evicted") == 10 and s3["evicted"] == 10
    delta = tables.read_partition(spark, tables.table_name(cfg.tables, "deltas"), "2024-03-03")
    assert {r.id for r in delta.where("change = 'evicted'").collect()} == {f"i{k}" for k in range(50, 60)}


@pytest.mark.slow
@pytest.mark.parametrize("align_on", ["items", "items_and_other"])  # carried users counted / from the join
def test_two_tower_users_absent_today_are_carried(spark, cfg_factory, tmp_path, align_on, rng):
    t, w = rng.normal(size=(40, 4)), rng.normal(size=(30, 4))
    items, users = [f"i{k}" for k in range(40)], [f"u{k}" for k in range(30)]

    cfg = cfg_factory(stabilize={"items": {"path": write_vectors(tmp_path / "t.parquet", t, items)},
                                 "other": {"path": write_vectors(tmp_path / "w1.parquet", w, users)},
                                 "other_side": "user", "align_on": align_on})
    step.run(spark, cfg, "2024-03-01")
    cfg.stabilize.other.path = write_vectors(tmp_path / "w2.parquet", w[:24], users[:24])
    s2 = step.run(spark, cfg, "2024-03-02")
    assert s2["carried"] == {"item": 0, "user": 6} and s2["rows"] == {"item": 40, "user": 30}
    user_rows = tables.read_partition(spark, tables.embeddings_table(cfg.tables, "user"), "2024-03-02").collect()
    assert {r.id for r in user_rows if r.carried} == {f"u{k}" for k in range(24, 30)}


@pytest.mark.slow
def test_rerun_of_a_published_dt_is_idempotent(spark, cfg_factory, tmp_path, rng):
    x = rng.normal(size=(40, 4))
    cfg = cfg_factory(stabilize={"mode": "align", "items": {"path": write_vectors(tmp_path / "1.parquet", x)}})
    step.run(spark, cfg, "2024-03-01")
    cfg.stabilize.items.path = write_vectors(tmp_path / "2.parquet", x + 0.01)
    step.run(spark, cfg, "2024-03-02")
    table = tables.embeddings_table(cfg.tables, "item")
    before = sorted(tuple(r) for r in tables.read_partition(spark, table, "2024-03-02").collect())
    step.run(spark, cfg, "2024-03-02")
    after = sorted(tuple(r) for r in tables.read_partition(spark, table, "2024-03-02").collect())
    assert before == after and len(after) == 40
    reg = tables.read_partition(spark, tables.table_name(cfg.tables, "versions"), "2024-03-02")
    assert reg.count() == 1 and registry.registered_dts(spark, cfg) == ["2024-03-01", "2024-03-02"]
    assert registry.read_version(spark, cfg, "2024-03-02")["item"].parent_dt == "2024-03-01"


def test_previous_version_too_old_is_a_new_root(spark, cfg_factory, tmp_path, rng):
    items = write_vectors(tmp_path / "1.parquet", rng.normal(size=(20, 4)))
    cfg = cfg_factory(stabilize={"mode": "align", "items": {"path": items}},
                      publish={"max_age_days": 3})
    step.run(spark, cfg, "2024-03-01")
    assert registry.previous_dt(spark, cfg, "2024-03-04") == ("2024-03-01", None)
    parent, reason = registry.previous_dt(spark, cfg, "2024-03-05")
    assert parent is None and "4 days old (max_age_days=3)" in reason
    summary = step.run(spark, cfg, "2024-03-05")
    assert summary["parent_dt"] is None and "4 days old" in summary["root_reason"]


@pytest.mark.slow
def test_smoothing_publishes_a_blend_with_the_parent(spark, cfg_factory, tmp_path, rng):
    """stabilize.smoothing = beta: a shared id publishes beta * aligned + (1 - beta) * parent's
    published vector, a new id its aligned vector; the freshness cost is recorded."""
    import numpy as np

    x = rng.normal(size=(40, 4))
    ids = [f"i{k}" for k in range(40)]
    cfg = cfg_factory(stabilize={"mode": "align", "smoothing": 0.25,
                                 "items": {"path": write_vectors(tmp_path / "1.parquet", x, ids)}})
    step.run(spark, cfg, "2024-03-01")  # a root: published as trained
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    x2 = np.vstack([(x[:36] + 0.3 * rng.normal(size=(36, 4))) @ q, rng.normal(size=(4, 4))])
    ids2 = ids[:36] + [f"new{k}" for k in range(4)]
    cfg.stabilize.items.path = write_vectors(tmp_path / "2.parquet", x2, ids2)
    step.run(spark, cfg, "2024-03-02")
    record = registry.read_version(spark, cfg, "2024-03-02")["item"]
    aligned = x2.astype(np.float32).astype(np.float64) @ record.transform
    table = tables.embeddings_table(cfg.tables, "item")
    published = {r.id: np.array(r.vector) for r in tables.read_partition(spark, table, "2024-03-02").collect()}
    parent = x.astype(np.float32).astype(np.float64)
    for k, i in enumerate(ids2):
        want = aligned[k] if i.startswith("new") else 0.25 * aligned[k] + 0.75 * parent[k]
        np.testing.assert_allclose(published[i], want, atol=1e-5)
    assert published["i39"] == pytest.approx(parent[39], abs=1e-6)  # carried as it was
    assert record.metrics["smoothing"] == 0.25
    assert record.metrics["smoothing_versions_to_90pct"] == pytest.approx(np.log(0.1) / np.log(0.75))
    assert record.metrics["smoothed_score_max_rel_err"] > record.metrics["score_max_rel_err"]
