"""CSV ids exactly as written: RFC 4180 quoting through step 1, training, stabilize and serving.

The log is written with Python's csv module (RFC 4180: fields holding the delimiter, a quote
or a newline are quoted, quotes doubled), so the expected ids are the Python strings.
"""
import csv
import datetime as dt
import logging

import pytest
from fastapi.testclient import TestClient

from embedlib import tables
from embedlib.config import ConfigError, InputConfig
from embedlib.sequences import SequenceInputError
from embedlib.serving import EmbeddingIndex
from embedlib.serving.published import partition_files
from embedlib.serving.service import create_app
from embedlib.steps import build_sequences, stabilize, train_item2vec

DT = "2024-01-10"
T0 = int(dt.datetime(2024, 1, 10, 12, tzinfo=dt.timezone.utc).timestamp())
HEADER = ["user_id", "item_id", "ts", "event_type"]
QUOTED, NEWLINE, LEAD, TRAIL, COMMA, NON_ASCII = (
    'say "hi"', "two\nlines", " lead", "trail ", "a,b", "Zoë-商品 ✓")
# Each user's items in time order; "lead"/"trail" and "u1"/" u1" must stay distinct ids.
SEQUENCES = {
    "u1": [QUOTED, NEWLINE, LEAD, TRAIL, COMMA, NON_ASCII],
    " u1": ["lead", LEAD, "trail", TRAIL],
    'Zoë "Z", \nnext line': [COMMA, NON_ASCII, QUOTED, NEWLINE],
}


def write_log(folder, sequences, t0=T0, **writer_args):
    folder.mkdir()
    with open(folder / "events.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n", **writer_args)
        writer.writerow(HEADER)
        for user, items in sequences.items():
            writer.writerows([user, item, t0 + k, "view"] for k, item in enumerate(items))
    return folder


@pytest.fixture(scope="module")
def published_cfg(spark, warehouse, tmp_path_factory):
    """The tricky log through build_sequences, train_item2vec and stabilize, one dt."""
    from tests.helpers import make_config

    log_dir = write_log(tmp_path_factory.mktemp("csv_ids") / "log", SEQUENCES)
    cfg = make_config(warehouse, input={"path": str(log_dir)},
                      sequences={"lookback_days": 1, "min_count": 1, "now": "2024-02-01T00:00:00"},
                      train={"vector_size": 4, "epochs": 5, "workers": 1, "window": 3, "sample": 0},
                      stabilize={"score_sample": 16, "overlap_queries": 4})
    summary = {name: run(spark, cfg, DT) for name, run in (
        ("build_sequences", build_sequences.run), ("train_item2vec", train_item2vec.run),
        ("stabilize", stabilize.run))}
    return cfg, summary


def test_ids_reach_the_sequences_and_item_stats_tables_as_written(spark, published_cfg):
    cfg, summary = published_cfg
    seq_df = tables.read_partition(spark, tables.table_name(cfg.tables, "sequences"), DT)
    stats_df = tables.read_partition(spark, tables.table_name(cfg.tables, "item_stats"), DT)
    assert {r.user_id: r.items for r in seq_df.collect()} == SEQUENCES
    expected_counts = {}
    for items in SEQUENCES.values():
        for item in items:
            expected_counts[item] = expected_counts.get(item, 0) + 1
    assert {r.item_id: r.n_events for r in stats_df.collect()} == expected_counts
    assert summary["build_sequences"]["input_rows"] == sum(map(len, SEQUENCES.values()))
    assert not any(summary["build_sequences"]["dropped"].values())


def test_ids_are_served_as_written(spark, published_cfg):
    cfg, _ = published_cfg
    index = EmbeddingIndex.from_parquet(partition_files(spark, cfg, DT), backend="numpy")
    wanted = sorted({item for items in SEQUENCES.values() for item in items})
    assert sorted(index.ids) == wanted
    assert list(index.lookup(wanted).ids) == wanted
    client = TestClient(create_app(index, cfg.serve, version=DT))
    for item in wanted:
        body = client.get("/vector", params={"id": item}).json()
        assert body["id"] == item and len(body["vector"]) == 4
    similar = client.post("/similar", json={"ids": [NEWLINE, QUOTED], "k": 2}).json()
    assert {n["id"] for row in similar["neighbors"] for n in row} <= set(wanted)


def build_from_csv(spark, cfg_factory, folder, **input_cfg):
    cfg = cfg_factory(input={"path": str(folder), **input_cfg},
                      sequences={"lookback_days": 1, "min_count": 1, "now": "2024-02-01T00:00:00"})
    return build_sequences.run(spark, cfg, DT)


@pytest.fixture
def embedlib_log(monkeypatch, caplog):
    """caplog sees embedlib's records (its logger does not propagate by default)."""
    monkeypatch.setattr(logging.getLogger("embedlib"), "propagate", True)
    caplog.set_level(logging.INFO, logger="embedlib")
    return caplog


@pytest.mark.parametrize("multiline", ["true", "false"])
def test_malformed_lines_are_dropped_counted_and_shown(spark, cfg_factory, tmp_path, embedlib_log, multiline):
    folder = write_log(tmp_path / "log", {"u1": ["a", "b", "c"]})
    with open(folder / "events.csv", "a", encoding="utf-8") as f:
        f.write(f"u2,unquoted,comma,{T0},view\n")  # five fields
        f.write(f"u2,d,{T0}\n")  # three fields
        f.write(f'u2,"e",{T0},view,\n')  # a trailing delimiter is a fifth, empty field
    summary = build_from_csv(spark, cfg_factory, folder, csv_multiline=multiline)
    dropped = {k: v for k, v in summary["dropped"].items() if v}
    assert dropped == {"malformed_line": 3}
    assert summary["items"]["seen"] == 3 and summary["input_rows"] == 6
    warning = next(r.getMessage() for r in embedlib_log.records if "malformed_line" in r.getMessage()
                   and r.levelno == logging.WARNING)
    assert "u2,unquoted,comma" in warning and f"u2,d,{T0}" in warning


def test_csv_multiline_auto_is_on_only_where_a_quoted_field_spans_lines(spark, tmp_path):
    plain = write_log(tmp_path / "plain", {"u1": [QUOTED, COMMA, "c"]})  # quotes, none spanning
    spanning = write_log(tmp_path / "spanning", {"u1": ["a", NEWLINE]})
    escaped = write_log(tmp_path / "escaped", {"u1": ["it's", "a,b"]}, quotechar="'", escapechar="\\",
                        doublequote=False, quoting=csv.QUOTE_ALL)  # 'it\'s': the escaped quote is not counted
    assert not tables.csv_multiline(spark, InputConfig(path=str(plain)))
    assert tables.csv_multiline(spark, InputConfig(path=str(spanning)))
    assert not tables.csv_multiline(spark, InputConfig(path=str(escaped), csv_quote="'", csv_escape="\\"))
    assert tables.csv_multiline(spark, InputConfig(path=str(plain), csv_multiline="true"))
    assert not tables.csv_multiline(spark, InputConfig(path=str(spanning), csv_multiline="false"))


def test_csv_multiline_false_splits_a_spanning_record_into_malformed_lines(spark, cfg_factory, tmp_path):
    folder = write_log(tmp_path / "log", {"u1": ["a", NEWLINE, "b", "c"]})
    assert not any(build_from_csv(spark, cfg_factory, folder)["dropped"].values())  # auto: read whole
    forced = build_from_csv(spark, cfg_factory, folder, csv_multiline="false")
    assert forced["dropped"]["malformed_line"] == 2 and forced["items"]["seen"] == 3


def test_csv_multiline_takes_yaml_booleans():
    from embedlib.config import load_config
    from tests.helpers import REPO

    assert load_config(REPO / "conf" / "local.yaml", ["input.csv_multiline=false"]).input.csv_multiline == "false"
    with pytest.raises(ConfigError, match="input.csv_multiline"):
        InputConfig(csv_multiline="maybe")


def test_long_malformed_line_is_truncated_in_the_log(spark, cfg_factory, tmp_path, embedlib_log):
    folder = write_log(tmp_path / "log", {"u1": ["a", "b"]})
    with open(folder / "events.csv", "a", encoding="utf-8") as f:
        f.write("u2," + ",".join(["x" * 100] * 50) + "\n")
    assert build_from_csv(spark, cfg_factory, folder)["dropped"]["malformed_line"] == 1
    warning = next(r.getMessage() for r in embedlib_log.records if "malformed_line" in r.getMessage()
                   and r.levelno == logging.WARNING)
    assert "u2,xxx" in warning and len(warning) < 1000


def test_configured_quote_and_escape(spark, cfg_factory, tmp_path):
    sequences = {"u1": ["it's", "a,b", '"plain"'], "u2": ["it's", "a,b"]}
    folder = write_log(tmp_path / "log", sequences, quotechar="'", escapechar="\\",
                       doublequote=False, quoting=csv.QUOTE_ALL)  # 'it\'s'
    summary = build_from_csv(spark, cfg_factory, folder, csv_quote="'", csv_escape="\\")
    assert not any(summary["dropped"].values())
    seq_df = tables.read_partition(spark, summary["sequences_table"], DT)
    assert {r.user_id: r.items for r in seq_df.collect()} == sequences


@pytest.mark.parametrize("key, value", [("csv_quote", "''"), ("csv_escape", ""), ("csv_quote", ",")])
def test_quote_and_escape_must_be_one_character_other_than_the_delimiter(key, value):
    with pytest.raises(ConfigError, match=f"input.{key}"):
        InputConfig(**{key: value})


def test_milliseconds_read_as_seconds_name_the_time_unit(spark, cfg_factory, tmp_path):
    folder = write_log(tmp_path / "log", {"u1": ["a", "b", "c"]}, t0=T0 * 1000)
    with pytest.raises(SequenceInputError,
                       match=rf"3 of 3 rows are future_time.*{T0 * 1000}.*{T0 * 1000 + 2}.*input.time_unit='s'"):
        build_from_csv(spark, cfg_factory, folder)
