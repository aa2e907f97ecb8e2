"""bench_churn's smoothed variants: the publication blend and the best-variant pick (no Spark)."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks import bench_churn


def test_smoothing_of_names_the_base_variant_and_beta():
    assert bench_churn.smoothing_of("ppmi_svd_smooth0.5") == ("ppmi_svd", 0.5)
    assert bench_churn.smoothing_of("ensemble4_smooth0.3") == ("ensemble4", 0.3)
    assert bench_churn.smoothing_of("single") == ("single", 1.0)


def test_smoothed_publication_blends_shared_ids_with_the_parent(rng):
    ids = np.array([f"i{n}" for n in range(60)], dtype=object)
    item, context = rng.normal(size=(60, 6)), rng.normal(size=(60, 6))
    counts = rng.integers(1, 50, 60)
    parent_ids = ids[10:]  # i0..i9 are new
    parent = (parent_ids, rng.normal(size=(50, 6)))
    aligned, plain = bench_churn.publish(ids, counts, item, context, parent)
    smoothed, figures = bench_churn.publish(ids, counts, item, context, parent, beta=0.3)
    np.testing.assert_allclose(smoothed[10:], 0.3 * aligned[10:] + 0.7 * parent[1])
    np.testing.assert_array_equal(smoothed[:10], aligned[:10])
    assert figures["stabilized_cosine"] > plain["stabilized_cosine"]


def test_best_overlap_variant_is_the_most_stable_at_the_hr_floor():
    def row(v, **variants):
        return {"version": v, "cut": f"2017-0{v + 1}-01", "test_pairs": 10, **{
            name: {"overlap_at_10": o, "churn_share": 0.0, "uniform_overlap_at_10": o, "uniform_churn_share": 0.0,
                   "stabilized_cosine": 1.0, "hr_at_10": hr, "ndcg_at_10": hr, "train_cpu_seconds": 1.0,
                   "train_wall_seconds": 1.0, "call_cpu_seconds": 1.0} for name, (o, hr) in variants.items()}}

    variants = {"single": (0.6, 0.10), "a": (0.99, 0.10), "b": (0.95, 0.106), "c": (0.9, 0.12)}
    out = bench_churn.summarize([row(0, **variants), row(1, **variants)], tuple(variants))
    assert out["best_overlap_variant"] == "b"
    assert out["best_overlap"] == pytest.approx(0.95)
    assert out["best_overlap_hr_ratio"] == pytest.approx(1.06)


def test_ppmi_settings_variants_change_one_setting():
    assert bench_churn.ppmi_settings("ppmi_svd") == {}
    assert bench_churn.ppmi_settings("ppmi_svd_dims128") == {"vector_size": 128}
    assert bench_churn.ppmi_settings("ppmi_svd_power5") == {"svd_power_iterations": 5}
    assert bench_churn.ppmi_settings("ppmi_svd_eigen0.5") == {"eigen_weight": 0.5}
    assert bench_churn.ppmi_settings("ppmi_svd_weightingdistance") == {"cooccurrence_weighting": "distance"}
    assert bench_churn.ppmi_settings("ppmi_svd_alpha0.75") == {"ppmi_smoothing": 0.75}
    assert bench_churn.smoothing_of("ppmi_svd_dims128_smooth0.5") == ("ppmi_svd_dims128", 0.5)
    for bad, message in (("ppmi_svd_rank9", "unknown setting"), ("ppmi_svddims128", "unknown setting"),
                         ("ppmi_svd_weightingfoo", "cooccurrence_weighting"), ("ppmi_svd_dimsx", "invalid literal")):
        with pytest.raises(ValueError, match=f"variant {bad}: .*{message}"):
            bench_churn.ppmi_settings(bad)


def test_every_variant_of_the_runs_builds_its_trainer_config():
    """The default run (smoothed variants included) and the --settings run: each ppmi_svd
    variant's settings merge into the trainer config the chain trains with."""
    from embedlib.config import TrainConfig
    for name in (*bench_churn.VARIANTS, *bench_churn.PPMI_SETTING_VARIANTS):
        base, _ = bench_churn.smoothing_of(name)
        if base.startswith("ppmi_svd"):
            cfg = bench_churn.ppmi_config(TrainConfig(), base)
            assert cfg.trainer == "ppmi_svd"
            assert all(getattr(cfg, k) == v for k, v in bench_churn.ppmi_settings(base).items())
    assert bench_churn.ppmi_config(TrainConfig(), "ppmi_svd_dims128").vector_size == 128
