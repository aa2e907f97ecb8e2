"""Step 2's corpus export: Spark's text writer, part files joined in order, the order independent
of the input's partitioning, ids exact."""
from __future__ import annotations

import datetime as dt_
import urllib.parse

import pytest
from pyspark.sql import functions as F

from embedlib import item2vec
from embedlib.item2vec import TrainInputError

SEQ_SCHEMA = ("user_id string, session_id string, items array<string>, n_items int, "
              "start_ts timestamp, end_ts timestamp")
ODD_IDS = ["a b", "new\nline", "tab\tid", 'say "hi"', "it's", "x%41", "é+1", "日本 🙂", "a,b"]


def sequence_rows(n: int = 60) -> list[tuple]:
    """Sequences of several users, some of only odd ids; one empty and one of a null id."""
    start = dt_.datetime(2024, 1, 10, 8, 0)
    rows = []
    for s in range(n):
        items = [ODD_IDS[(s + k) % len(ODD_IDS)] for k in range(1 + s % 4)] + [f"i{s}"]
        rows.append((f"u{s % 7}", f"{s}-0", items, len(items), start + dt_.timedelta(minutes=s), None))
    rows.append(("u0", "empty-0", [], 0, start, None))
    rows.append(("u1", "null-0", [None], 1, start, None))
    return rows


def expected_order(spark, rows: list[tuple]) -> list[list[str]]:
    """The non-empty sequences in corpus_lines' order: Spark's hash partition of the user
    (pmod of Murmur3 ``hash``, as HashPartitioning computes it), then (user, start, session)."""
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    users = sorted({r[0] for r in rows})
    bucket = {r["u"]: r["b"] for r in spark.createDataFrame([(u,) for u in users], "u string")
              .select("u", F.pmod(F.hash("u"), F.lit(partitions)).alias("b")).collect()}
    ordered = sorted(rows, key=lambda r: (bucket[r[0]], r[0], r[4], r[1]))
    return [r[2] for r in ordered if r[2] and r[2][0]]


def test_parts_are_joined_in_order_and_every_id_round_trips(spark, tmp_path):
    rows = sequence_rows()
    df = spark.createDataFrame(rows, SEQ_SCHEMA).repartition(3)
    corpus = item2vec.export_corpus(df, tmp_path / "corpus.txt")
    assert corpus.parts > 1  # the order across part files is what is checked below
    text = corpus.path.read_bytes().decode("utf-8")
    assert text.endswith("\n")
    lines = text[:-1].split("\n")
    assert [line.split() for line in lines] == [line.split(" ") for line in lines]  # as gensim splits
    assert [[urllib.parse.unquote_plus(t) for t in line.split(" ")] for line in lines] == \
        expected_order(spark, rows)
    assert not list(tmp_path.glob("*.parts"))


def test_corpus_does_not_depend_on_the_input_partitioning(spark, tmp_path):
    rows = sequence_rows()
    frames = {"one": spark.createDataFrame(rows, SEQ_SCHEMA).coalesce(1),
              "five": spark.createDataFrame(rows[::-1], SEQ_SCHEMA).repartition(5),
              "by_session": spark.createDataFrame(rows, SEQ_SCHEMA).repartition(7, "session_id")}
    files = {name: item2vec.export_corpus(df, tmp_path / f"{name}.txt").path.read_bytes()
             for name, df in frames.items()}
    assert files["one"] == files["five"] == files["by_session"]


def test_export_through_a_hadoop_uri_gives_the_same_file(spark, tmp_path):
    df = spark.createDataFrame(sequence_rows(), SEQ_SCHEMA)
    direct = item2vec.export_corpus(df, tmp_path / "direct.txt")
    stage = (tmp_path / "stage").as_uri()
    staged = item2vec.export_corpus(df, tmp_path / "staged.txt", stage_uri=stage)
    assert staged.parts == direct.parts
    assert staged.path.read_bytes() == direct.path.read_bytes()
    assert not (tmp_path / "stage").exists()  # the staged parts are deleted once copied


def test_corpus_paths_on_a_cluster_need_a_shared_corpus_dir(tmp_path):
    assert item2vec.corpus_paths("local[2]", None, tmp_path, "c") == (tmp_path / "c.txt", None)
    shared = tmp_path / "nfs"
    assert item2vec.corpus_paths("yarn", str(shared), tmp_path, "c") == (shared / "c.txt", None)
    assert item2vec.corpus_paths("yarn", "hdfs://nn/tmp/corpus/", tmp_path, "c") == (
        tmp_path / "c.txt", "hdfs://nn/tmp/corpus/c.parts")
    with pytest.raises(TrainInputError, match="train.corpus_dir must be set when spark.master is yarn"):
        item2vec.corpus_paths("yarn", None, tmp_path, "c")
