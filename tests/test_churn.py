"""Neighbour churn to the parent: the distributed search against a NumPy reference, the
metrics built from it, and where they show (make run's summary, the report)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from pyspark.sql import functions as F

from embedlib import churn, knn, pipeline, report, spark_passes, vector_codec
from embedlib.churn import churn_metrics
from tests.helpers import neighbour_churn

K = 10


def joined_frame(spark, rng, n=360, e=8, noise=0.35, partitions=4):
    """A join_previous-like frame (id, t, b) in several partitions, its float32 matrices and
    a stabilizing transform f_t: b is a rotation of t @ f_t plus noise, so queries keep some
    of their neighbours and lose others."""
    t = rng.normal(size=(n, e)).astype(np.float32)
    f_t = np.eye(e) + 0.3 * rng.normal(size=(e, e))
    q, _ = np.linalg.qr(rng.normal(size=(e, e)))
    b = (t.astype(np.float64) @ f_t @ q + noise * rng.normal(size=(n, e))).astype(np.float32)
    ids = [f"i{j:04d}" for j in rng.permutation(n)]
    rows = [(i, x.tolist(), y.tolist()) for i, x, y in zip(ids, t, b)]
    df = spark.createDataFrame(rows, "id string, t array<float>, b array<float>").repartition(partitions)
    return df, np.array(ids, dtype=object), t, b, f_t


def weighted_draw(df, n: int) -> list:
    """Efraimidis-Spirakis in numpy: u from the low 53 bits of xxhash64(id), key log(u) / count
    (1 without a count column), the n largest keys (ties by id)."""
    cols = [F.xxhash64("id").alias("h")] + ([F.col("count")] if "count" in df.columns else [])
    keys = {}
    for r in df.select("id", *cols).collect():
        u = ((r.h & ((1 << 53) - 1)) + 0.5) / float(1 << 53)
        keys[r.id] = np.log(u) / max(float(r["count"] or 1) if "count" in df.columns else 1.0, 1.0)
    return sorted(keys, key=lambda i: (-keys[i], i))[:n]


def reference(spark, df, ids, t, b, f_t, n_queries, k=K):
    """Query ids (``weighted_draw``), their neighbours by knn.nearest_neighbors over
    all rows, and the queries whose k + 1 best scores nearly tie on a side (float32 rounding
    may order those either way), with float64 scores to check them by."""
    query_ids = weighted_draw(df, n_queries)
    row_of = {i: r for r, i in enumerate(ids)}
    rows = np.array([row_of[i] for i in query_ids])
    out = {"query_ids": query_ids, "ambiguous": set(), "score": {}}
    for name, x in (("after", t.astype(np.float64) @ f_t), ("before", b.astype(np.float64))):
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        scores = unit[rows] @ unit.T
        scores[np.arange(len(rows)), rows] = -np.inf
        top = -np.sort(-scores, axis=1)[:, :k + 1]
        out["ambiguous"] |= set(np.flatnonzero(np.diff(-top, axis=1).min(axis=1) < 1e-6).tolist())
        out[name] = [list(ids[r]) for r in knn.nearest_neighbors(x, rows, k)]
        out["score"][name] = lambda qi, nid, s=scores: s[qi, row_of[nid]]
    return out


@pytest.fixture
def small_batches(spark):
    """Arrow batches of 37 rows: several per partition, some smaller than k; and the
    partitions kept apart (adaptive execution may merge tiny ones into one)."""
    settings = {"spark.sql.execution.arrow.maxRecordsPerBatch": "37",
                "spark.sql.adaptive.coalescePartitions.enabled": "false"}
    old = {key: spark.conf.get(key) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    yield
    for key, value in old.items():
        spark.conf.set(key, value)


@pytest.mark.parametrize("reduce", ["driver", "tree"])
def test_distributed_churn_equals_the_numpy_reference(spark, rng, monkeypatch, small_batches, reduce):
    if reduce == "tree":  # past this many partitions the candidates merge on the executors
        monkeypatch.setattr(spark_passes, "FLAT_REDUCE_MAX_PARTITIONS", 1)
    df, ids, t, b, f_t = joined_frame(spark, rng)
    assert df.rdd.getNumPartitions() == 4
    query_ids, before, after = neighbour_churn(df, f_t, t.shape[1], K, 60)
    ref = reference(spark, df, ids, t, b, f_t, 60)
    assert query_ids == ref["query_ids"] and len(set(query_ids)) == 60
    assert len(ref["ambiguous"]) <= 3
    for i, q in enumerate(query_ids):
        for name, got in (("before", before[i]), ("after", after[i])):
            assert q not in got  # it would be its own nearest (cosine 1) if not excluded
            if i in ref["ambiguous"]:  # a valid top k: the reference's scores, in order
                score = ref["score"][name]
                np.testing.assert_allclose([score(i, n) for n in got], [score(i, n) for n in ref[name][i]],
                                           atol=1e-6)
            else:
                assert got == ref[name][i]

    # The metrics, from the reference's lists.
    metrics = churn_metrics(query_ids, ref["before"], ref["after"], K)
    share = np.array([len(set(x) & set(y)) / K for x, y in zip(ref["before"], ref["after"])])
    assert 0 < (share < 0.5).mean() < 1  # the data has both kinds of items
    assert metrics["neighbour_overlap_at_10"] == pytest.approx(share.mean())
    assert metrics["neighbour_churn_share"] == pytest.approx((share < 0.5).mean())
    assert metrics["overlap_queries"] == 60
    most = metrics["most_changed"]
    assert len(most) == 20 and [m["overlap"] for m in most] == sorted(share)[:20]
    assert [(m["overlap"], m["id"]) for m in most] == sorted((m["overlap"], m["id"]) for m in most)
    for m in most:
        i = query_ids.index(m["id"])
        assert m["overlap"] == share[i] and (m["before"], m["after"]) == (ref["before"][i], ref["after"][i])


@pytest.mark.parametrize("reduce", ["driver", "tree"])
def test_cross_gram_pass_picks_the_queries_of_query_order(spark, rng, monkeypatch, small_batches, reduce):
    if reduce == "tree":
        monkeypatch.setattr(spark_passes, "FLAT_REDUCE_MAX_PARTITIONS", 1)
    df, ids, t, b, f_t = joined_frame(spark, rng)
    df = df.withColumn("count", (F.xxhash64("id") % 50 + 1).cast("long"))
    keyed = df.withColumn(churn.QUERY_KEY, churn.query_key(df))
    cg = spark_passes.cross_gram(keyed, "t", "b", t.shape[1], None, spark_passes.TopRowsRequest(60, churn.QUERY_KEY))
    assert cg.top.column("id").to_pylist() == weighted_draw(df, 60)
    row_of = {i: r for r, i in enumerate(ids)}
    picked = [row_of[i] for i in cg.top.column("id").to_pylist()]
    np.testing.assert_array_equal(vector_codec.batch_matrix(cg.top.column("t"), t.shape[1]), t[picked])
    np.testing.assert_array_equal(vector_codec.batch_matrix(cg.top.column("b"), t.shape[1]), b[picked])
    np.testing.assert_allclose(cg.cross, t.astype(np.float64).T @ b.astype(np.float64), rtol=1e-10)


@pytest.mark.parametrize("reduce", ["driver", "tree"])
def test_same_id_pass_cosines_and_moved_rows(spark, rng, monkeypatch, small_batches, reduce):
    if reduce == "tree":
        monkeypatch.setattr(spark_passes, "FLAT_REDUCE_MAX_PARTITIONS", 1)
    df, ids, t, b, f_t = joined_frame(spark, rng)
    b64 = b.astype(np.float64)
    cos = {}
    for name, x in (("raw", t.astype(np.float64)), ("stabilized", t.astype(np.float64) @ f_t)):
        cos[name] = np.einsum("ij,ij->i", x, b64) / (np.linalg.norm(x, axis=1) * np.linalg.norm(b64, axis=1))
    threshold = float(np.median(1.0 - cos["stabilized"]))
    moved = {i: c for i, c in zip(ids, cos["stabilized"]) if 1.0 - c > threshold}
    assert 0 < len(moved) < len(ids)
    queries = churn.pick_queries(df, 30)
    result = churn.same_id_pass(df, f_t, t.shape[1], K, queries, moved_threshold=threshold)
    try:
        for name, c in cos.items():
            assert result.cosine_metrics[f"cosine_{name}_mean"] == pytest.approx(c.mean(), abs=1e-12)
            for q, key in ((0.5, "median"), (0.05, "p5")):  # a bin's centre: within 1e-4 of a rank-q value
                lo, hi = np.quantile(c, q, method="lower"), np.quantile(c, q, method="higher")
                assert lo - 1e-4 <= result.cosine_metrics[f"cosine_{name}_{key}"] <= hi + 1e-4
        got = {r.id: r.stabilized for r in result.cosines_df.collect()}
        assert got.keys() == moved.keys()
        np.testing.assert_allclose([got[i] for i in moved], list(moved.values()), atol=1e-12)
        assert result.shared == len(ids) and result.query_ids == queries.column("id").to_pylist()
    finally:
        spark_passes.release(result.cached)
    assert not result.cached[0].is_cached


def test_queries_are_all_shared_ids_when_fewer_and_neighbours_are_the_others(spark, rng):
    df, ids, t, b, f_t = joined_frame(spark, rng, n=K + 1, partitions=3)
    query_ids, before, after = neighbour_churn(df, f_t, t.shape[1], K, 500)
    assert sorted(query_ids) == sorted(ids)
    for q, x, y in zip(query_ids, before, after):
        assert sorted(x) == sorted(y) == sorted(set(ids) - {q})
    assert churn_metrics(query_ids, before, after, K)["neighbour_churn_share"] == 0.0


def test_stabilize_records_churn_over_all_shared_ids(spark, cfg_factory, tmp_path, rng):
    from embedlib.steps import stabilize as step
    from tests.helpers import write_vectors

    a = rng.normal(size=(300, 6))
    cfg = cfg_factory(stabilize={"mode": "align", "overlap_queries": 40,
                                 "items": {"path": write_vectors(tmp_path / "a.parquet", a)}})
    root = step.run(spark, cfg, "2024-03-01")
    assert "neighbour_churn_share" not in root and "most_changed" not in root  # a root has no parent
    cfg.stabilize.items.path = write_vectors(tmp_path / "b.parquet", a + 0.3 * rng.normal(size=a.shape))
    summary = step.run(spark, cfg, "2024-03-02")
    assert summary["overlap_queries"] == 40 and "overlap_sample" not in summary
    assert 0 < summary["neighbour_churn_share"] < 1 and 0 < summary["neighbour_overlap_at_10"] < 1
    assert len(summary["most_changed"]) == 20 and len(summary["most_changed"][0]["before"]) == 10
    from embedlib import registry
    assert registry.read_version(spark, cfg, "2024-03-02")["item"].metrics["most_changed"] == summary["most_changed"]


def test_block_candidates_exclude_pad_and_merge_by_score_then_id():
    vectors = np.array([[1, 0], [0.9, 0.1], [1, 0], [0, 1]], dtype=np.float32)
    ids = np.array(["d", "c", "a", "b"], dtype=object)
    queries = knn.unit_rows(np, np.array([[1, 0], [0, 1]], dtype=np.float32))
    scores, found = knn.block_candidates(queries, vectors[:2], ids[:2], 3, np.array([0, -1]))
    assert found[0].tolist() == ["c", None, None] and scores[0, 1] == -np.inf  # row 0 excluded, padded
    s2, f2 = knn.block_candidates(queries, vectors[2:], ids[2:], 3)
    best_scores, best = knn.merge_candidates(np.concatenate([scores, s2], axis=1),
                                             np.concatenate([found, f2], axis=1), 3)
    assert best[0].tolist() == ["a", "c", "b"]  # a (score 1) before c, whatever the block order
    assert best[1].tolist()[0] == "b" and np.all(np.diff(best_scores, axis=1) <= 0)
    # equal scores: the lower id first
    tied = knn.merge_candidates(np.array([[0.5, 0.5, 0.7]]), np.array([["z", "m", "q"]], dtype=object), 2)[1]
    assert tied.tolist() == [["q", "m"]]


def test_summary_row_shows_the_churn_columns():
    results = {"2024-01-02": {"stabilize": {"neighbour_overlap_at_10": 0.61, "neighbour_churn_share": 0.25}}}
    row = pipeline.summary_rows(results)[0]
    assert row["overlap@10"] == 0.61 and row["churn>half"] == 0.25
    header, line = pipeline.format_table([row]).splitlines()
    assert "churn>half" in header.split() and "0.250" in line.split()


def record(parent_dt, metrics, root_reason=None):
    return {"item": SimpleNamespace(parent_dt=parent_dt, root=parent_dt is None, root_reason=root_reason,
                                    metrics=metrics)}


def test_report_churn_section_shows_the_trend_and_the_most_changed_items(tmp_path):
    from embedlib import report_page

    most = [{"id": "i7", "overlap": 0.1, "before": ["i1", "i2"], "after": ["i2", "i9"]},
            {"id": "i3", "overlap": 0.4, "before": ["i4"], "after": ["i4"]}]
    versions = {"2024-01-01": record(None, {}, "no previous version"),
                "2024-01-02": record("2024-01-01", {"neighbour_overlap_at_10": 0.7, "neighbour_churn_share": 0.2,
                                                    "overlap_queries": 500, "most_changed": most[:1]}),
                "2024-01-03": record("2024-01-02", {"neighbour_overlap_at_10": 0.6, "neighbour_churn_share": 0.3,
                                                    "overlap_queries": 500, "most_changed": most})}
    figures = {"dt": "2024-01-03", "trends": report.trend_figures(versions, 10),
               "churn": report.churn_figures(versions, "2024-01-03", 10)}
    churn = figures["churn"]
    assert churn["overlap"] == 0.6 and churn["churn_share"] == 0.3 and churn["most_changed"] == most
    assert figures["trends"]["neighbour_churn_share"] == [None, 0.2, 0.3]
    page = report_page._churn_section(figures, tmp_path)
    assert (tmp_path / "churn.png").exists() and 'src="churn.png"' in page
    assert "0.3" in page and "500" in page and "i7" in page and "i9" in page and "i3" in page
    assert page.index("i7") < page.index("i3")  # most changed first

    root = {"dt": "2024-01-01", "trends": report.trend_figures({"2024-01-01": versions["2024-01-01"]}, 10),
            "churn": report.churn_figures(versions, "2024-01-01", 10)}
    assert "no parent version" in root["churn"]["missing"]
    (tmp_path / "root").mkdir()
    assert "no parent version" in report_page._churn_section(root, tmp_path / "root")
    assert not (tmp_path / "root" / "churn.png").exists()  # no version has a figure to plot


def test_queries_are_drawn_in_proportion_to_counts(spark, rng):
    """Ids seen 50 times are queried about 50 times as often as ids seen once; the draw is
    the reference's, and without counts it is uniform."""
    n = 2000
    counts = np.where(np.arange(n) < 100, 50, 1)
    rows = [(f"c{j:04d}", int(c)) for j, c in enumerate(counts)]
    df = spark.createDataFrame(rows, "id string, count long")
    picked = [r.id for r in df.orderBy(*churn.query_order(df)).limit(100).collect()]
    assert picked == weighted_draw(df, 100)
    heavy = sum(int(i[1:]) < 100 for i in picked)
    # expected share of heavy ids among the first draws: 100*50 / (100*50 + 1900) = 0.72
    assert 55 <= heavy <= 90
    plain = df.select("id")
    uniform = [r.id for r in plain.orderBy(*churn.query_order(plain)).limit(100).collect()]
    assert uniform == weighted_draw(plain, 100)
    assert sum(int(i[1:]) < 100 for i in uniform) <= 15
