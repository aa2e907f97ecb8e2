"""Seed ensembles and warm start (train.ensemble_size, train.init): the maths against numpy,
the runners, determinism, the train_runs metadata, fallbacks and refusals."""
from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from embedlib import ensemble, item2vec, tables
from embedlib.config import ConfigError
from embedlib.evaluate import vectors_to_numpy
from embedlib.steps import train_item2vec
from tests.helpers import FAST, error_lines, job, planted_sequences, write_sequences
from tests.helpers import TRAIN_DT as DT
from tests.helpers import read_raw_side as read_side


def _random_model(rng, n=60, e=6):
    t = rng.normal(size=(n, e))
    w = rng.normal(size=(n, e))
    return t, w


def _reference_rotate_mean(frames):
    """numpy only: rotate each (t, w) onto frames[0]'s t with Procrustes (SVD), then the mean."""
    ref = frames[0][0]
    ts, ws = [], []
    for t, w in frames:
        u, _, vt = np.linalg.svd(t.T @ ref)
        o = u @ vt
        ts.append(t @ o)
        ws.append(None if w is None else w @ o)
    return np.mean(ts, axis=0), (None if ws[0] is None else np.mean(ws, axis=0))


def _reference_canonical(t, w):
    """The canonical pair of S = T W^T from its full SVD: U sqrt(S), V sqrt(S)."""
    u, s, vt = np.linalg.svd(t @ w.T, full_matrices=False)
    e = t.shape[1]
    return u[:, :e] * np.sqrt(s[:e]), vt[:e].T * np.sqrt(s[:e])


def test_item_only_average_is_rotation_onto_member_0_then_mean(rng):
    base = rng.normal(size=(80, 5))
    items = []
    for _ in range(3):
        q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
        items.append(base @ q + 0.05 * rng.normal(size=base.shape))
    got = ensemble.align_and_average(items)
    want, _ = _reference_rotate_mean([(x, None) for x in items])
    np.testing.assert_allclose(got.item, want, atol=1e-5)
    assert got.context is None
    for a, b in got.transforms:
        np.testing.assert_allclose(a @ a.T, np.eye(5), atol=1e-10)  # item-only: a rotation
        assert b is None


def test_average_with_context_matches_numpy_canonical_reference(rng):
    t0, w0 = _random_model(rng)
    items, contexts = [], []
    for _ in range(4):
        a = rng.normal(size=(6, 6)) + 3 * np.eye(6)  # an arbitrary invertible frame per member
        items.append(t0 @ a + 0.02 * rng.normal(size=t0.shape))
        contexts.append(w0 @ np.linalg.inv(a).T + 0.02 * rng.normal(size=w0.shape))
    got = ensemble.align_and_average(items, contexts)
    want_t, want_w = _reference_rotate_mean([_reference_canonical(t, w) for t, w in zip(items, contexts)])
    # Member 0's canonical frame is defined up to signs: compare what no orthogonal map changes.
    np.testing.assert_allclose(got.item @ got.item.T, want_t @ want_t.T, atol=1e-4)
    np.testing.assert_allclose(got.item @ got.context.T, want_t @ want_w.T, atol=1e-4)
    np.testing.assert_allclose(got.context @ got.context.T, want_w @ want_w.T, atol=1e-4)


def test_each_member_keeps_its_scores_and_copies_of_one_model_average_to_it(rng):
    t, w = _random_model(rng)
    items, contexts = [], []
    for _ in range(3):
        a = rng.normal(size=(6, 6)) + 3 * np.eye(6)
        items.append(t @ a)
        contexts.append(w @ np.linalg.inv(a).T)
    got = ensemble.align_and_average(items, contexts)
    for x, y, (a, b) in zip(items, contexts, got.transforms):
        np.testing.assert_allclose((x @ a) @ (y @ b).T, x @ y.T, rtol=0, atol=1e-9 * np.abs(x @ y.T).max())
    np.testing.assert_allclose(got.item.astype(np.float64) @ got.context.T, t @ w.T,
                               atol=1e-5 * np.abs(t @ w.T).max())


def test_members_of_other_shapes_are_refused(rng):
    with pytest.raises(ensemble.EnsembleError, match="differ in shape"):
        ensemble.align_and_average([rng.normal(size=(5, 3)), rng.normal(size=(6, 3))])


def test_agreement_is_one_for_rotated_copies_and_lower_for_noise(rng):
    x = rng.normal(size=(300, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert ensemble.agreement([x, x @ q]) == pytest.approx(1.0)
    assert ensemble.agreement([x, x + rng.normal(size=x.shape)]) < 0.9
    assert ensemble.agreement([x]) is None


def test_local_pool_fits_threads_cores_and_memory():
    assert ensemble.local_pool_size(4, workers=2, one_member_bytes=1, free_bytes=None, cpus=2) == 2
    assert ensemble.local_pool_size(4, workers=8, one_member_bytes=1, free_bytes=None, cpus=16) == 4
    assert ensemble.local_pool_size(4, workers=8, one_member_bytes=10, free_bytes=45, cpus=16) == 2
    assert ensemble.local_pool_size(4, workers=8, one_member_bytes=100, free_bytes=10, cpus=16) == 1


def test_an_ensemble_over_the_drivers_memory_is_refused_up_front_naming_what_it_needs():
    collected, peak = ensemble.driver_bytes(4, 500_000, 128)
    assert collected == 4 * 500_000 * 128 * 4 * 2 and peak == collected * 3
    needs = r"an ensemble of 4 members of 500000 items x 128 dims needs about 1\.91 GiB "
    with pytest.raises(ensemble.EnsembleError, match=needs + r".* over spark\.driver\.maxResultSize \(1\.00 GiB\)"):
        ensemble.check_driver_memory(4, 500_000, 128, max_result_bytes=2**30, free_bytes=None)
    with pytest.raises(ensemble.EnsembleError, match=r"5\.72 GiB at its peak.* over the 4\.00 GiB of memory"):
        ensemble.check_driver_memory(4, 500_000, 128, max_result_bytes=0, free_bytes=4 * 2**30)
    ensemble.check_driver_memory(4, 500_000, 128, max_result_bytes=0, free_bytes=None)  # unlimited


def test_member_processes_that_die_say_what_to_check():
    import os

    with pytest.raises(ensemble.EnsembleError, match=r'import the main script again.*if __name__ == "__main__":'):
        ensemble.run_local(os._exit, [(3,), (3,)], pool=2)


# ----------------------------------------------------------------------- through the step
@pytest.fixture
def planted(spark, cfg_factory):
    def make(**train):
        cfg = cfg_factory(train={**FAST, **train})
        write_sequences(spark, cfg, planted_sequences())
        return cfg
    return make


def _train_runs(spark, cfg, dt=DT) -> dict:
    return tables.read_partition(spark, tables.table_name(cfg.tables, "train_runs"), dt).first().asDict()


def test_k1_is_todays_single_model_path(spark, planted, monkeypatch, tmp_path):
    cfg = planted(ensemble_size=1)
    monkeypatch.setattr(item2vec, "train_ensemble", lambda *a, **k: pytest.fail("k=1 took the ensemble path"))
    train_item2vec.run(spark, cfg, DT)
    ids, vectors, _ = read_side(spark, cfg, "item")
    corpus = item2vec.export_corpus(train_item2vec.extract(spark, cfg, DT), tmp_path / "c.txt")
    model, _, _ = item2vec.train_gensim_file(corpus, cfg.train)
    from urllib.parse import unquote_plus
    direct = {unquote_plus(k): model.wv[k] for k in model.wv.index_to_key}
    np.testing.assert_array_equal(vectors, np.array([direct[i] for i in ids]))
    row = _train_runs(spark, cfg)
    assert (row["ensemble_size"], row["init"], row["cold_dt"], json.loads(row["seeds_json"])) == (1, "cold", DT, [3])


def test_ensemble_member_equals_the_single_model_of_its_seed(tmp_path, spark, planted):
    """The members build their vocabulary from the driver's counts, not a scan: same model."""
    cfg = planted()
    corpus = item2vec.export_corpus(train_item2vec.extract(spark, cfg, DT), tmp_path / "c.txt")
    _, vocab = item2vec.prepare_model(corpus, cfg.train)
    for seed in (3, 4):
        one = dataclasses.replace(cfg.train, seed=seed)
        member = item2vec.train_member(str(corpus.path), one, vocab)
        single, _, _ = item2vec.train_gensim_file(corpus, one)
        assert member.keys == single.wv.index_to_key
        np.testing.assert_array_equal(member.item, single.wv.vectors)
        np.testing.assert_array_equal(member.context, single.syn1neg)


def test_ensemble_is_deterministic_whichever_runner_trains_it(spark, planted):
    """One gensim thread per member (workers 1; or 2 split over a pool of 2 processes): the
    same seeds give the same vectors in this process, in a process pool and in Spark tasks."""
    results = {}
    for name, train in [("in-process", {"workers": 1}), ("process-pool", {"workers": 2}),
                        ("spark-tasks", {"workers": 1, "ensemble_runner": "spark"}),
                        ("in-process again", {"workers": 1})]:
        cfg = planted(ensemble_size=2, **train)
        train_item2vec.run(spark, cfg, DT)
        results[name] = read_side(spark, cfg, "item")[1], read_side(spark, cfg, "context")[1]
        row = _train_runs(spark, cfg)
        assert row["ensemble_size"] == 2 and json.loads(row["seeds_json"]) == [3, 4]
        assert len(json.loads(row["member_seconds_json"])) == len(json.loads(row["member_cpu_seconds_json"])) == 2
        assert row["ensemble_runner"] == train.get("ensemble_runner", "local")
        assert 0 < row["member_agreement"] <= 1
    first = results.pop("in-process")
    for name, (item, context) in results.items():
        np.testing.assert_array_equal(item, first[0], err_msg=name)
        np.testing.assert_array_equal(context, first[1], err_msg=name)


def test_ensemble_is_the_mean_of_its_members_in_one_frame(spark, planted, tmp_path):
    cfg = planted(ensemble_size=3)
    train_item2vec.run(spark, cfg, DT)
    ids, item, _ = read_side(spark, cfg, "item")
    context = read_side(spark, cfg, "context")[1]
    corpus = item2vec.export_corpus(train_item2vec.extract(spark, cfg, DT), tmp_path / "c.txt")
    _, vocab = item2vec.prepare_model(corpus, cfg.train)
    members = [item2vec.train_member(str(corpus.path), dataclasses.replace(cfg.train, seed=s), vocab)
               for s in (3, 4, 5)]
    from urllib.parse import unquote_plus
    order = np.argsort([unquote_plus(k) for k in members[0].keys])
    want = ensemble.align_and_average([m.item for m in members], [m.context for m in members])
    np.testing.assert_allclose(item, want.item[order], atol=1e-6)
    np.testing.assert_allclose(context, want.context[order], atol=1e-6)
    # averaged, not one member: closer to the mean than member 0 alone is
    assert not np.allclose(item, (members[0].item @ want.transforms[0][0])[order], atol=1e-3)


# --------------------------------------------------------------------------- warm start
def _published_parent(spark, cfg, dt="2024-01-09"):
    """Train dt as a cold root and publish it (the warm start's parent)."""
    from embedlib.steps import stabilize

    write_sequences(spark, cfg, planted_sequences(seed=1), dt=dt)
    train_item2vec.run(spark, dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init="cold")), dt)
    stabilize.run(spark, cfg, dt)
    return dt


def test_warm_start_keeps_parent_vectors_for_known_ids_and_drops_absent_ones(tmp_path, spark, planted):
    cfg = planted(init="warm")
    corpus = item2vec.export_corpus(train_item2vec.extract(spark, cfg, DT), tmp_path / "c.txt")
    model, _ = item2vec.prepare_model(corpus, cfg.train)
    vocab = [k for k in model.wv.index_to_key]
    rng = np.random.default_rng(0)
    parent_ids = np.array(["a b", "b3", "gone-1", "gone-2"], dtype=object)
    init = item2vec.WarmStart("2024-01-09", parent_ids, rng.normal(size=(4, 16)).astype(np.float32),
                              rng.normal(size=(4, 16)).astype(np.float32), "2024-01-09")
    before = model.wv.vectors.copy()
    assert item2vec.apply_warm_start(model, init) == 2
    from urllib.parse import unquote_plus
    rows = {unquote_plus(k): i for i, k in enumerate(vocab)}
    for j, i in enumerate(["a b", "b3"]):
        np.testing.assert_array_equal(model.wv.vectors[rows[i]], init.item[j])
        np.testing.assert_array_equal(model.syn1neg[rows[i]], init.context[j])
    assert "gone-1" not in rows and "gone-2" not in rows and len(model.wv) == len(vocab)
    untouched = [r for i, r in rows.items() if i not in ("a b", "b3")]
    np.testing.assert_array_equal(model.wv.vectors[untouched], before[untouched])


def test_warm_start_from_a_published_parent_and_periodic_cold(spark, planted, caplog):
    cfg = planted(init="warm", warm_epochs=2, cold_every_days=2)
    parent = _published_parent(spark, cfg)
    train_item2vec.run(spark, cfg, DT)
    row = _train_runs(spark, cfg)
    assert (row["init"], row["init_parent_dt"], row["cold_dt"]) == ("warm", parent, parent)
    p_ids, p_item = vectors_to_numpy(tables.read_partition(
        spark, tables.embeddings_table(cfg.tables, "item", raw=True), parent))
    ids, item, _ = read_side(spark, cfg, "item")
    shared = sorted(set(p_ids) & set(ids))
    a = p_item[[list(p_ids).index(i) for i in shared]]
    b = item[[list(ids).index(i) for i in shared]]
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert np.mean(cos) > 0.5  # started from the parent's frame, not random

    from embedlib.steps import stabilize
    stabilize.run(spark, cfg, DT)
    write_sequences(spark, cfg, planted_sequences(seed=2), dt="2024-01-11")
    caplog.clear()
    train_item2vec.run(spark, cfg, "2024-01-11")  # the last cold start is 2 days old
    row = _train_runs(spark, cfg, "2024-01-11")
    assert (row["init"], row["cold_dt"]) == ("cold", "2024-01-11")
    lines = [r for r in caplog.records if "cold_every_days=2" in r.getMessage()]
    assert len(lines) == 1


def test_warm_start_without_parent_falls_back_to_cold_with_one_line(spark, planted, caplog):
    cfg = planted(init="warm")
    train_item2vec.run(spark, cfg, DT)
    assert _train_runs(spark, cfg)["init"] == "cold"
    lines = [r for r in caplog.records if "train.init=warm" in r.getMessage()]
    assert len(lines) == 1 and "no parent version" in lines[0].getMessage() and lines[0].levelname == "WARNING"


def test_warm_start_from_a_parent_of_another_dimension_falls_back(spark, planted, caplog):
    cfg = planted(init="warm")
    _published_parent(spark, dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, vector_size=8)))
    caplog.clear()
    train_item2vec.run(spark, cfg, DT)
    assert _train_runs(spark, cfg)["init"] == "cold"
    lines = [r.getMessage() for r in caplog.records if "train.init=warm" in r.getMessage()]
    assert len(lines) == 1 and "dimension 8" in lines[0]


@pytest.mark.parametrize("train, message", [
    ({"init": "warm", "ensemble_size": 2}, "init=warm with train.ensemble_size > 1 is refused"),
    ({"trainer": "spark", "ensemble_size": 2}, "need train.trainer=gensim"),
    ({"trainer": "spark", "init": "warm"}, "need train.trainer=gensim"),
    ({"ensemble_size": 0}, "train.ensemble_size must be >= 1"),
    ({"init": "hot"}, "train.init"),
    ({"ensemble_runner": "yarn"}, "train.ensemble_runner"),
    ({"warm_alpha": 0.00001}, "train.warm_alpha"),
])
def test_refused_combinations_are_config_errors(cfg_factory, train, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("+", r"\+")):
        cfg_factory(train=train)


def test_refusal_through_the_job_is_one_error_line(tmp_path):
    out = subprocess.run(job("train_item2vec", tmp_path, "train.init=warm", "train.ensemble_size=2")
                         + ["--dt", DT], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 2
    errors = error_lines(out.stderr)
    assert len(errors) == 1 and "ensemble_size" in errors[0], out.stderr[-2000:]


def test_the_corpus_copy_shipped_to_the_members_is_removed(spark, planted, monkeypatch, tmp_path):
    import os

    cfg = planted(ensemble_size=2, ensemble_runner="spark", corpus_dir=str(tmp_path / "corpus"))
    shipped = []

    def member_fails(spark_, fn, jobs, shipped_file):
        shipped.append(shipped_file)
        assert os.path.exists(shipped_file)
        raise ensemble.EnsembleError("an ensemble member failed on an executor: lost")
    monkeypatch.setattr(ensemble, "run_on_spark", member_fails)
    with pytest.raises(ensemble.EnsembleError, match="lost"):
        train_item2vec.run(spark, cfg, DT)
    assert shipped and not os.path.exists(shipped[0])
    assert [p.name for p in (tmp_path / "corpus").iterdir() if p.name.endswith(".txt")] == [f"corpus-{DT}.txt"]
