"""Step 1 transforms on small inline frames: nulls, ties, repeats, gaps, chunks, counts."""
import datetime as dt

import pytest
from pyspark.sql import functions as F

from embedlib.config import ColumnsConfig, InputConfig, SequencesConfig
from embedlib.sequences import (
    DROP_REASONS,
    SequenceInputError,
    build_sequences,
    select_events,
    time_unit_hint,
    to_session_chunks,
    window_bounds_ms,
    with_drop_reason,
    with_session_id,
)

DAY = "2024-01-10"
T0 = int(dt.datetime(2024, 1, 10, 12, tzinfo=dt.timezone.utc).timestamp())
RAW_COLS = "user_id string, item_id string, ts string, event_type string"


def raw(spark, rows):
    return spark.createDataFrame(rows, RAW_COLS)


def events(spark, rows):
    """rows of (user, item, seconds since T0) -> the event contract."""
    data = [(u, i, (T0 + s) * 1000, None, None) for u, i, s in rows]
    return spark.createDataFrame(
        data, "user_id string, item_id string, ts_ms long, event_type string, weight double")


def seqs(df):
    return {(r.user_id, r.session_id): r.items for r in df.collect()}


def test_select_events_parses_units_and_nulls(spark):
    df = raw(spark, [(" u1 ", "a", "1704888000", "view"), ("", "b", "17e8", None),
                     (None, None, None, None), ("u2", "c", "NaN", "x"), ("u3", "d", "soon", "x"),
                     (" \t", "e", "1", None)])
    rows = select_events(df, InputConfig()).collect()
    assert [r.user_id for r in rows] == [" u1 ", None, None, "u2", "u3", None]  # as written; blank is null
    assert rows[0].ts_ms == 1704888000000
    assert rows[1].ts_ms == 1_700_000_000_000
    assert [r.ts_ms for r in rows[2:5]] == [None, None, None]


def test_select_events_ms_and_timestamp_units(spark):
    df = spark.createDataFrame([("u", "a", "1704888000123", "2024-01-10 12:00:00")],
                               "u string, i string, ms string, stamp string")
    cfg_ms = InputConfig(columns=ColumnsConfig(user="u", item="i", time="ms"), time_unit="ms")
    cfg_ts = InputConfig(columns=ColumnsConfig(user="u", item="i", time="stamp"), time_unit="timestamp")
    assert select_events(df, cfg_ms).first().ts_ms == 1704888000123
    assert select_events(df, cfg_ts).first().ts_ms == 1704888000000


def test_missing_column_names_it(spark):
    cfg = InputConfig()
    cfg.columns.user = "userId"
    with pytest.raises(SequenceInputError, match=r"user='userId'.*available columns: user_id"):
        select_events(raw(spark, [("u", "a", "1", None)]), cfg)


def test_gap_exactly_at_threshold_stays_in_session(spark):
    df = events(spark, [("u", "a", 0), ("u", "b", 1800), ("u", "c", 3601), ("u", "d", 3602)])
    rows = with_session_id(df, 1800).orderBy("ts_ms").collect()
    assert [r.session_no for r in rows] == [0, 0, 1, 1]


def test_ties_in_time_order_by_item_id_whatever_the_partitioning(spark):
    rows = [("u", "z", 0), ("u", "b", 0), ("u", "m", 0), ("u", "a", 5)]
    for parts in (1, 3):
        df = events(spark, rows).repartition(parts)
        out = df.transform(with_session_id, 1800).transform(to_session_chunks, 50)
        assert seqs(out) == {("u", "0-0"): ["b", "m", "z", "a"]}


def test_consecutive_repeats_collapse_but_not_across_sessions(spark):
    df = events(spark, [("u", "a", 0), ("u", "a", 10), ("u", "b", 20), ("u", "a", 30),
                        ("u", "a", 5000), ("u", "c", 5010)])
    out = df.transform(with_session_id, 1800).transform(to_session_chunks, 50)
    assert seqs(out) == {("u", "0-0"): ["a", "b", "a"], ("u", "1-0"): ["a", "c"]}
    assert out.agg(F.sum("n_repeats")).first()[0] == 1


def test_long_sessions_split_into_chunks(spark):
    df = events(spark, [("u", f"i{k}", k) for k in range(7)])
    out = df.transform(with_session_id, 1800).transform(to_session_chunks, 3)
    assert seqs(out) == {("u", "0-0"): ["i0", "i1", "i2"], ("u", "0-1"): ["i3", "i4", "i5"],
                         ("u", "0-2"): ["i6"]}


def test_single_event_user_gives_one_short_chunk(spark):
    out = events(spark, [("solo", "a", 0)]).transform(with_session_id, 1800).transform(to_session_chunks, 50)
    assert seqs(out) == {("solo", "0-0"): ["a"]}


def test_window_bounds_cover_lookback_days_ending_with_dt():
    start, end = window_bounds_ms(DAY, 2)
    assert end - start == 2 * 86400 * 1000
    assert dt.datetime.fromtimestamp(end / 1000, dt.timezone.utc) == dt.datetime(2024, 1, 11, tzinfo=dt.timezone.utc)


def build(spark, rows, **seq):
    seq = {"lookback_days": 1, "min_count": 1, "now": "2024-02-01T00:00:00", **seq}
    cfg = SequencesConfig(**seq)
    return build_sequences(raw(spark, rows), InputConfig(event_types=[]), cfg, DAY)


def test_build_counts_every_drop_by_reason(spark):
    t = str(T0)
    rows = [("u1", "a", t, None), ("u1", "b", str(T0 + 1), None), ("u1", "b", str(T0 + 1), None),
            (None, "a", t, None), ("u2", None, t, None), ("u2", "a", None, None),
            ("u2", "a", "garbage", None), ("u2", "a", "-5", None), ("u2", "a", "4102444800", None),
            ("u3", "a", str(T0 - 3 * 86400), None), ("u4", "c", t, None)]
    result = build(spark, rows)
    c = result.counts
    assert c["input_rows"] == 11
    assert c["outside_window"] == 1
    assert {k: v for k, v in c["dropped"].items() if v} == {
        "null_user": 1, "null_item": 1, "null_time": 1, "unparseable_time": 1,
        "time_out_of_range": 1, "future_time": 1, "duplicate": 1}
    assert seqs(result.sequences_df) == {("u1", "0-0"): ["a", "b"]}
    assert c["sequences"]["short_dropped"] == 1  # u4's single event


def test_item_admission_removes_rare_items_before_sessions(spark):
    rows = [("u1", "a", str(T0), None), ("u1", "rare", str(T0 + 1), None), ("u1", "b", str(T0 + 2), None),
            ("u2", "a", str(T0), None), ("u2", "b", str(T0 + 1), None)]
    result = build(spark, rows, min_count=2)
    assert seqs(result.sequences_df) == {("u1", "0-0"): ["a", "b"], ("u2", "0-0"): ["a", "b"]}
    stats = {r.item_id: (r.n_events, r.n_users, r.admitted) for r in result.item_stats_df.collect()}
    assert stats == {"a": (2, 2, True), "b": (2, 2, True), "rare": (1, 1, False)}
    assert result.counts["items"] == {"seen": 3, "admitted": 2, "removed": 1, "events_removed": 1}


def test_empty_input_is_a_clear_error(spark):
    with pytest.raises(SequenceInputError, match="no rows"):
        build(spark, [])


def test_all_rows_bad_is_a_clear_error(spark):
    with pytest.raises(SequenceInputError, match=r"no valid events for dt=2024-01-10.*null_user=2"):
        build(spark, [(None, "a", str(T0), None), (None, "b", str(T0), None)])


def test_no_sequence_long_enough_is_a_clear_error(spark):
    with pytest.raises(SequenceInputError, match="no sequence of at least 2 items"):
        build(spark, [("u1", "a", str(T0), None), ("u2", "a", str(T0), None)])


def test_event_type_filter_and_min_weight(spark):
    df = spark.createDataFrame(
        [("u", "a", str(T0), "view", "5"), ("u", "b", str(T0 + 1), "click", "4"),
         ("u", "c", str(T0 + 2), "view", "1"), ("u", "d", str(T0 + 3), "view", "x"),
         ("u", "e", str(T0 + 4), "view", "4.5")], RAW_COLS + ", w string")
    cfg = InputConfig(event_types=["view"], min_weight=3.5)
    cfg.columns.event_type, cfg.columns.weight = "event_type", "w"
    result = build_sequences(df, cfg, SequencesConfig(lookback_days=1, min_count=1), DAY)
    assert seqs(result.sequences_df) == {("u", "0-0"): ["a", "e"]}
    dropped = result.counts["dropped"]
    assert (dropped["filtered_event_type"], dropped["below_min_weight"], dropped["bad_weight"]) == (1, 1, 1)


def test_mostly_unparseable_times_log_a_time_unit_hint(spark):
    rows = [("u1", "a", str(T0), None), ("u1", "b", str(T0 + 1), None),
            ("u2", "a", "2024-01-10 12:00:00", None), ("u2", "b", "2024-01-10 12:00:05", None),
            ("u3", "a", "2024-01-09", None)]
    classified_df = with_drop_reason(select_events(raw(spark, rows), InputConfig()), InputConfig(),
                                     (T0 + 86400) * 1000, 0, (T0 + 86400) * 1000)
    counts = {"input_rows": 5, "in_window": 2, "outside_window": 0,
              "dropped": {r: 0 for r in DROP_REASONS} | {"unparseable_time": 3}}
    hint = time_unit_hint(classified_df, counts, InputConfig())
    assert hint.startswith("3 of 5 rows are unparseable_time")
    assert "from '2024-01-09' to '2024-01-10 12:00:05'" in hint and "input.time_unit='s'" in hint
    counts["dropped"]["unparseable_time"], counts["in_window"] = 2, 3
    assert time_unit_hint(classified_df, counts, InputConfig()) is None
