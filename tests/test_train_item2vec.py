"""Step 2: the train_item2vec step, both trainers, the table contract and bad input."""
from __future__ import annotations

import dataclasses
import json
import urllib.parse

import numpy as np
import pytest

from embedlib import item2vec, tables, trainers
from embedlib.config import ConfigError
from embedlib.item2vec import TrainInputError
from embedlib.steps import train_item2vec
from tests.helpers import CLUSTER_A, FAST, SEQ_SCHEMA, planted_sequences, write_sequences
from tests.helpers import TRAIN_DT as DT
from tests.helpers import read_raw_side as read_side


@pytest.fixture
def planted_cfg(spark, cfg_factory):
    cfg = cfg_factory(train=FAST)
    write_sequences(spark, cfg, planted_sequences())
    return cfg


def test_gensim_writes_item_and_context_with_exact_ids_and_counts(spark, planted_cfg):
    summary = train_item2vec.run(spark, planted_cfg, DT)
    expected = {}
    for seq in planted_sequences():
        for item in seq:
            expected[item] = expected.get(item, 0) + 1
    for side in ("item", "context"):
        table = tables.embeddings_table(planted_cfg.tables, side, raw=True)
        schema = [(f.name, f.dataType.simpleString()) for f in spark.table(table).schema.fields]
        assert schema == [("id", "string"), ("vector", "array<float>"), ("count", "bigint"),
                          ("dt", "string")]
        ids, vectors, counts = read_side(spark, planted_cfg, side)
        assert counts == expected  # every odd id survives exactly, with its corpus count
        assert vectors.shape == (20, 16) and np.isfinite(vectors).all()
    runs = tables.read_partition(spark, summary["train_runs_table"], DT).collect()
    assert len(runs) == 1
    run = runs[0]
    assert (run.trainer, run.vocab_size, run.corpus_tokens, run.has_context) == ("gensim", 20, 1440, True)
    assert json.loads(run.params_json)["window"] == 3
    assert "gensim" in json.loads(run.library_versions_json)
    assert run.train_seconds > 0 and run.words_per_second > 0


def test_context_rows_align_with_item_rows(spark, planted_cfg, tmp_path):
    train_item2vec.run(spark, planted_cfg, DT)
    ids, items, _ = read_side(spark, planted_cfg, "item")
    ctx_ids, contexts, _ = read_side(spark, planted_cfg, "context")
    assert list(ids) == list(ctx_ids)
    # Same seed, one worker: retraining on the same corpus gives gensim's own model.
    sequences_df = train_item2vec.extract(spark, planted_cfg, DT)
    corpus = item2vec.export_corpus(sequences_df, tmp_path / "corpus.txt")
    model, _, _ = item2vec.train_gensim_file(corpus, planted_cfg.train)
    row = {urllib.parse.unquote_plus(k): i for i, k in enumerate(model.wv.index_to_key)}
    for a, b in [("a b", "a0"), ("b3", "é+1"), ("tab\tid", "b7"), ("x%41", "a b"),
                 ("new\nline", "日本 🙂")]:
        ours = items[list(ids).index(a)] @ contexts[list(ids).index(b)]
        assert ours == pytest.approx(model.wv.vectors[row[a]] @ model.syn1neg[row[b]], rel=1e-5)
    # The skip-gram score ranks co-occurring (same cluster) pairs above the others.
    in_a = np.isin(ids, CLUSTER_A)
    scores = items @ contexts.T
    same = scores[np.ix_(in_a, in_a)].mean() + scores[np.ix_(~in_a, ~in_a)].mean()
    cross = scores[np.ix_(in_a, ~in_a)].mean() + scores[np.ix_(~in_a, in_a)].mean()
    assert same > cross + 1.0


def test_fixed_seed_one_worker_rerun_gives_identical_vectors(spark, planted_cfg):
    train_item2vec.run(spark, planted_cfg, DT)
    first = read_side(spark, planted_cfg, "item")
    train_item2vec.run(spark, planted_cfg, DT)
    second = read_side(spark, planted_cfg, "item")
    assert list(first[0]) == list(second[0])  # rerun replaced the partition: no duplicates
    np.testing.assert_array_equal(first[1], second[1])
    other_seed = dataclasses.replace(planted_cfg, train=dataclasses.replace(planted_cfg.train, seed=4))
    train_item2vec.run(spark, other_seed, DT)
    assert not np.array_equal(read_side(spark, planted_cfg, "item")[1], first[1])


def test_spark_trainer_writes_items_under_same_contract_and_drops_stale_context(spark, planted_cfg):
    train_item2vec.run(spark, planted_cfg, DT)
    gensim_ids, _, gensim_counts = read_side(spark, planted_cfg, "item")
    spark_cfg = dataclasses.replace(
        planted_cfg, train=dataclasses.replace(planted_cfg.train, trainer="spark", epochs=3))
    summary = train_item2vec.run(spark, spark_cfg, DT)
    assert "context_table" not in summary
    ids, vectors, counts = read_side(spark, planted_cfg, "item")
    assert list(ids) == list(gensim_ids) and counts == gensim_counts
    assert vectors.shape == (20, 16) and np.isfinite(vectors).all()
    raw_context = tables.embeddings_table(planted_cfg.tables, "context", raw=True)
    assert DT not in tables.list_partitions(spark, raw_context)
    run = tables.read_partition(spark, summary["train_runs_table"], DT).first()
    assert (run.trainer, run.has_context, run.vocab_size) == ("spark", False, 20)


def _nothing_written(spark, cfg) -> bool:
    names = [tables.embeddings_table(cfg.tables, s, raw=True) for s in ("item", "context")]
    names.append(tables.table_name(cfg.tables, "train_runs"))
    return not any(tables.table_exists(spark, n) for n in names)


def test_no_sequences_for_dt_is_an_error(spark, cfg_factory):
    cfg = cfg_factory(train=FAST)
    write_sequences(spark, cfg, planted_sequences(4), dt="2024-01-09")
    with pytest.raises(TrainInputError, match="no sequences for dt=2024-01-10"):
        train_item2vec.run(spark, cfg, DT)
    assert _nothing_written(spark, cfg)


@pytest.mark.parametrize("sequences, train, message", [
    ([], {}, "no item"),
    ([["a"], ["a"], ["a"]], {}, "one distinct item"),
    ([["a", "b"], ["a", "c"], ["a", "b"]], {"min_count": 3}, "vocabulary too small: 1 of 3"),
    ([["a", "b"], ["b", "c"]], {"min_vocab_size": 4}, "train.min_vocab_size is 4"),
])
@pytest.mark.parametrize("trainer", ["gensim", "spark"])
def test_bad_corpus_is_an_error(spark, cfg_factory, trainer, sequences, train, message):
    cfg = cfg_factory(train={**FAST, "trainer": trainer, **train})
    rows = [("u", f"{i}-0", items, len(items), None, None) for i, items in enumerate(sequences)]
    with pytest.raises(TrainInputError, match=message):
        trainers.train(spark, spark.createDataFrame(rows, SEQ_SCHEMA), cfg.train)


@pytest.mark.parametrize("trainer", ["gensim", "spark"])
def test_bad_corpus_in_the_step_writes_nothing(spark, cfg_factory, trainer):
    cfg = cfg_factory(train={**FAST, "trainer": trainer})
    write_sequences(spark, cfg, [["a"], ["a"]])
    with pytest.raises(TrainInputError, match="one distinct item"):
        train_item2vec.run(spark, cfg, DT)
    assert _nothing_written(spark, cfg)


@pytest.mark.parametrize("train, message", [
    ({"vector_size": 0}, "train.vector_size must be >= 1, got 0"),
    ({"vector_size": -8}, "train.vector_size"),
    ({"trainer": "fasttext"}, "train.trainer must be one of gensim, spark"),
    ({"epochs": 0}, "train.epochs"),
    ({"sg": 2}, "train.sg"),
    ({"negative": -1}, "train.negative"),
    ({"min_vocab_size": 1}, "train.min_vocab_size"),
])
def test_invalid_train_config_is_a_clear_error(cfg_factory, train, message):
    with pytest.raises(ConfigError, match=message):
        cfg_factory(train=train)


def test_trainer_params_record_only_what_the_trainer_uses(cfg_factory):
    spark_params = item2vec.trainer_params(cfg_factory(train={"trainer": "spark"}).train)
    gensim_params = item2vec.trainer_params(cfg_factory().train)
    assert "ns_exponent" not in spark_params and "spark_partitions" in spark_params
    assert "ns_exponent" in gensim_params and "spark_partitions" not in gensim_params
