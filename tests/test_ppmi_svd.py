"""The ppmi_svd trainer: counts and SPPMI against numpy, the randomized SVD against a dense
SVD, Gram-Cholesky orthonormality, hashed Omega, determinism, refusals, the step."""
from __future__ import annotations

import dataclasses
import datetime as dt_
import json

import numpy as np
import pytest

from embedlib import ppmi_svd, randomized_svd, tables
from embedlib.config import ConfigError, TrainConfig
from embedlib.cooccurrence import CountSpec, PmiSpec, cooccurrence_counts, sppmi
from embedlib.evaluate import HoldOut, cooccurrence_metrics, vectors_to_numpy
from embedlib.steps import train_item2vec
from tests.helpers import CLUSTER_A, CLUSTER_B, SEQ_SCHEMA, planted_sequences, write_sequences
from tests.helpers import TRAIN_DT as DT


def random_sequences(rng, n_seq=60, n_items=24) -> list[list[str]]:
    return [[f"i{j}" for j in rng.integers(0, n_items, rng.integers(2, 9))] for _ in range(n_seq)]


def sequences_frame(spark, sequences):
    start = dt_.datetime(2024, 1, 10, 8, 0)
    rows = [(f"u{s % 7}", f"{s}-0", items, len(items), start + dt_.timedelta(minutes=s),
             start + dt_.timedelta(minutes=s + 1)) for s, items in enumerate(sequences)]
    return spark.createDataFrame(rows, SEQ_SCHEMA)


def numpy_sppmi(sequences, window, weighting="uniform", min_count=1, alpha=1.0, shift=1.0):
    """The dense SPPMI matrix by brute force: (ids, M)."""
    counts = {}
    for s in sequences:
        for i in s:
            counts[i] = counts.get(i, 0) + 1
    kept = [[i for i in s if counts[i] >= min_count] for s in sequences]
    ids = sorted({i for s in kept for i in s})
    pos = {i: n for n, i in enumerate(ids)}
    c = np.zeros((len(ids), len(ids)))
    for s in kept:
        for a in range(len(s)):
            for b in range(a + 1, min(len(s), a + window + 1)):
                w = 1.0 if weighting == "uniform" else 1.0 / (b - a)
                c[pos[s[a]], pos[s[b]]] += w
                c[pos[s[b]], pos[s[a]]] += w
    tot = c.sum(axis=1)
    with np.errstate(divide="ignore"):
        pmi = (np.log(c) - np.log(tot)[:, None] - alpha * np.log(tot)[None, :]
               + np.log(np.sum(tot ** alpha)) - np.log(shift))
    return np.array(ids), np.where(c > 0, np.maximum(pmi, 0.0), 0.0)


def frame_to_dense(m_df, ids):
    pos = {i: n for n, i in enumerate(ids)}
    m = np.zeros((len(ids), len(ids)))
    for r in m_df.collect():
        m[pos[r.row], pos[r.col]] = r.value
    return m


def test_sppmi_matches_numpy_with_distance_weights_smoothing_shift_and_admission(spark, rng):
    seqs = random_sequences(rng)
    seqs.append(["rare", "i1", "i2"])
    ids, expected = numpy_sppmi(seqs, 3, "distance", min_count=2, alpha=0.75, shift=2.0)
    counts_df = cooccurrence_counts(sequences_frame(spark, seqs), CountSpec(3, "distance", 2, 1000))
    m_df = sppmi(counts_df, PmiSpec(0.75, 2.0))
    assert "rare" not in {r.row for r in counts_df.select("row").collect()}
    assert m_df.where("value <= 0").count() == 0  # only positive entries are stored
    np.testing.assert_allclose(frame_to_dense(m_df, ids), expected, rtol=1e-12, atol=1e-12)


def test_sequences_longer_than_the_cap_are_cut(spark):
    df = sequences_frame(spark, [["a", "b", "c", "d"]])
    pairs = {(r.row, r.col) for r in cooccurrence_counts(df, CountSpec(5, "uniform", 1, 2)).collect()}
    assert pairs == {("a", "b"), ("b", "a")}


def dense_frame(spark, ids, matrix):
    return spark.createDataFrame([(str(i), [float(x) for x in row]) for i, row in zip(ids, matrix)],
                                 randomized_svd.DENSE_SCHEMA)


@pytest.mark.parametrize("log_cond", [1, 7])
def test_cholesky_qr_orthonormality(spark, rng, log_cond):
    """Q = Y t has Q^T Q = I to 1e-10, also for cond(Y) = 1e7 (CholeskyQR2 then runs)."""
    u, _ = np.linalg.qr(rng.standard_normal((300, 8)))
    v, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    y = u @ np.diag(np.logspace(0, -log_cond, 8)) @ v.T * 1e3
    orth = randomized_svd.orthonormalize(dense_frame(spark, range(300), y).repartition(3), 8)
    q = y @ orth.t
    assert np.abs(q.T @ q - np.eye(8)).max() < 1e-10
    np.testing.assert_allclose(q @ orth.r, y, atol=1e-9 * np.abs(y).max())
    assert len(orth.conditions) == (2 if log_cond > 2 else 1)


def test_hashed_omega_depends_on_the_id_and_seed_only(spark):
    ids = [f"id{i}" for i in range(50)]
    first = {r.id: r.vec for r in randomized_svd.hashed_rows(
        spark.createDataFrame([(i,) for i in ids], "id string"), 6, 7).collect()}
    others = spark.createDataFrame([(i,) for i in reversed(ids[10:] + ["new"])], "id string")
    second = {r.id: r.vec for r in randomized_svd.hashed_rows(others.repartition(3), 6, 7).collect()}
    assert all(second[i] == first[i] for i in ids[10:])
    reseeded = {r.id: r.vec for r in randomized_svd.hashed_rows(others, 6, 8).collect()}
    assert reseeded["id20"] != first["id20"]
    sample = randomized_svd.omega_rows(np.arange(20000) * 7919, 8)
    assert abs(sample.mean()) < 0.02 and abs(sample.std() - 1) < 0.02


def test_randomized_svd_matches_dense_svd(spark, rng):
    """With l = rank + oversample >= n the range finder holds M's whole range: singular
    values and the rank-r subspace equal numpy's to 1e-6."""
    seqs = random_sequences(rng, n_seq=80, n_items=20)
    ids, m = numpy_sppmi(seqs, 2)
    m_df = sppmi(cooccurrence_counts(sequences_frame(spark, seqs), CountSpec(2)), PmiSpec())
    result = randomized_svd.randomized_svd(m_df, 5, 20, 1, 3, 1.0)
    u, s, vt = np.linalg.svd(m)
    np.testing.assert_allclose(result.singular_values[:5], s[:5], rtol=1e-6)
    got_ids, item = vectors_to_numpy(result.item_df)
    ctx_ids, context = vectors_to_numpy(result.context_df)
    pos = {i: n for n, i in enumerate(ids)}
    item_full, ctx_full = np.zeros_like(item), np.zeros_like(context)
    item_full[[pos[i] for i in got_ids]], ctx_full[[pos[i] for i in ctx_ids]] = item, context
    basis = item_full / s[:5]  # U (float32 storage: 1e-6 is its precision)
    assert np.abs(basis @ basis.T - u[:, :5] @ u[:, :5].T).max() < 1e-6
    np.testing.assert_allclose(item_full @ ctx_full.T, u[:, :5] * s[:5] @ vt[:5], atol=1e-5)


def train_vectors(spark, sequences_df, cfg):
    result = ppmi_svd.train(sequences_df, cfg)
    return vectors_to_numpy(result.item_df), vectors_to_numpy(result.context_df)


def test_same_vectors_across_input_partitionings_and_reruns(spark, rng):
    df = sequences_frame(spark, random_sequences(rng, n_seq=120, n_items=40))
    cfg = TrainConfig(trainer="ppmi_svd", vector_size=6, window=3, svd_oversample=4)
    (ids, item), (cids, context) = train_vectors(spark, df, cfg)
    for other_df in (df.repartition(5), df.coalesce(1), df):
        (ids2, item2), (cids2, context2) = train_vectors(spark, other_df, cfg)
        assert list(ids2) == list(ids) and list(cids2) == list(cids)
        assert np.array_equal(item2, item) and np.array_equal(context2, context)


def test_cooccurrence_baseline_hit_rate_by_hand(spark):
    train_df = sequences_frame(spark, [["a", "b", "c"], ["a", "b"], ["a", "c"]])
    # window 1: #(a, b) = 2, #(a, c) = 1, #(b, c) = 1; a's top 1 is b, c's is a (tie by id)
    holdout = HoldOut(train_df, np.array(["a", "a", "c", "z"], dtype=object),
                      np.array(["b", "c", "b", "a"], dtype=object), np.array(["a"], dtype=object), "cut")
    got = cooccurrence_metrics(spark, holdout, window=1, k=1)
    assert (got["cooccurrence_hr"], got["cooccurrence_ndcg"]) == (0.25, 0.25)
    assert cooccurrence_metrics(spark, holdout, window=1, k=2)["cooccurrence_hr"] == 0.75


def test_refusals_name_the_key_and_the_reason():
    with pytest.raises(ConfigError, match=r"train.ensemble_size=4 with train.trainer=ppmi_svd is refused"):
        TrainConfig(trainer="ppmi_svd", ensemble_size=4)
    with pytest.raises(ConfigError, match=r"train.init=warm with train.trainer=ppmi_svd is refused"):
        TrainConfig(trainer="ppmi_svd", init="warm")
    with pytest.raises(ConfigError, match="train.eigen_weight"):
        TrainConfig(trainer="ppmi_svd", eigen_weight=1.5)


@pytest.mark.slow
def test_step_writes_both_sides_train_runs_and_counts(spark, cfg_factory):
    cfg = cfg_factory(train={"trainer": "ppmi_svd", "vector_size": 4, "window": 3,
                             "cooccurrence_table": "item_cooccurrence"})
    write_sequences(spark, cfg, planted_sequences())
    summary = train_item2vec.run(spark, cfg, DT)
    sides = {}
    for side in ("item", "context"):
        df = tables.read_partition(spark, tables.embeddings_table(cfg.tables, side, raw=True), DT)
        sides[side] = vectors_to_numpy(df)
        assert sides[side][1].shape == (20, 4) and np.isfinite(sides[side][1]).all()
    assert list(sides["item"][0]) == list(sides["context"][0])
    ids, item = sides["item"]
    unit = item / np.linalg.norm(item, axis=1, keepdims=True)
    a = np.isin(ids, CLUSTER_A)
    cos = unit @ unit.T
    assert cos[a][:, a].mean() > 0.5 and cos[a][:, ~a].mean() < 0.1  # the planted clusters
    assert set(ids) == set(CLUSTER_A + CLUSTER_B)
    run = tables.read_partition(spark, summary["train_runs_table"], DT).first()
    assert (run.trainer, run.vocab_size, run.corpus_tokens) == ("ppmi_svd", 20, 1440)
    assert json.loads(run.params_json)["svd_power_iterations"] == 2
    assert "negative" not in json.loads(run.params_json)
    assert summary["phase_count_seconds"] > 0 and summary["sppmi_entries"] > 0
    counts = tables.read_partition(spark, tables.qualified(cfg.tables, "item_cooccurrence"), DT)
    assert counts.columns == ["row", "col", "count"] and counts.count() == summary["cooccurrence_pairs"]
    with pytest.raises(ConfigError):
        dataclasses.replace(cfg.train, ensemble_size=2)
