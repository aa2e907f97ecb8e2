"""Step 1: behaviour log -> clean item sequences and item statistics.

Each function is DataFrame -> DataFrame and composes with ``df.transform``. The order of
events never depends on partitioning: every window orders by (ts_ms, item_id, event_type),
and exact duplicates of that key are removed first, so the order is total.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from embedlib.config import InputConfig, SequencesConfig
from embedlib.errors import EmbedlibError
from embedlib.log import get_logger
from embedlib.tables import MALFORMED_COL

log = get_logger(__name__)

EVENT_COLS = ["user_id", "item_id", "ts_ms", "event_type", "weight"]
SEQUENCE_COLS = ["user_id", "session_id", "items", "n_items", "start_ts", "end_ts"]
ITEM_STATS_COLS = ["item_id", "n_events", "n_users", "first_seen", "last_seen", "admitted"]
# Checked in this order; a row gets the first reason that applies.
DROP_REASONS = ["malformed_line", "null_user", "null_item", "null_time", "unparseable_time",
                "time_out_of_range", "future_time", "bad_weight", "filtered_event_type",
                "below_min_weight"]
OUTSIDE_WINDOW = "outside_window"
# Reasons a wrong input.time_unit produces; when one covers most rows, the log says so.
TIME_REASONS = ["unparseable_time", "time_out_of_range", "future_time"]
MALFORMED_SAMPLE_LINES, MALFORMED_SAMPLE_CHARS = 3, 200


class SequenceInputError(EmbedlibError):
    """The input cannot produce sequences (missing column, no rows, nothing valid)."""


class EmptyInputError(SequenceInputError):
    """The input has rows, but none that make sequences for this dt (a day without data)."""


def _clean_id(col: Column) -> Column:
    """The id exactly as written; null when empty or blank (whitespace only)."""
    text = col.cast("string")
    return F.when(text.rlike(r"^\s*$"), None).otherwise(text)


def _time_ms(raw_df: DataFrame, col_name: str, unit: str) -> Column:
    """Event time as epoch milliseconds (long), null where it cannot be parsed."""
    col = F.col(col_name)
    if unit == "timestamp":
        dtype = raw_df.schema[col_name].dataType
        ts = col if isinstance(dtype, T.TimestampType) else col.cast("string").try_cast("timestamp")
        return F.unix_millis(ts)
    number = col.cast("string").try_cast("double")
    number = F.when(F.isnan(number) | number.isin(float("inf"), float("-inf")), None).otherwise(number)
    scaled = number * 1000.0 if unit == "s" else number
    return F.floor(scaled).cast("long")


def select_events(raw_df: DataFrame, input_cfg: InputConfig) -> DataFrame:
    """Map the configured raw columns to the event contract, plus parse-status columns.

    Output columns: EVENT_COLS + ``time_raw`` (the raw time as a string, for bad-row reasons)
    + ``malformed_raw`` (a malformed CSV line's text, see tables.read_input; else null).
    """
    cols = input_cfg.columns
    wanted = {"user": cols.user, "item": cols.item, "time": cols.time,
              "event_type": cols.event_type, "weight": cols.weight}
    missing = [f"{k}={v!r}" for k, v in wanted.items() if v and v not in raw_df.columns]
    if missing:
        raise SequenceInputError(
            f"input has no column for {', '.join(missing)} (input.columns); "
            f"available columns: {', '.join(raw_df.columns)}"
        )
    etype = F.col(cols.event_type).cast("string") if cols.event_type else F.lit(None).cast("string")
    weight = (F.col(cols.weight).cast("string").try_cast("double") if cols.weight
              else F.lit(None).cast("double"))
    malformed = F.col(MALFORMED_COL) if MALFORMED_COL in raw_df.columns else F.lit(None).cast("string")
    return raw_df.select(
        _clean_id(F.col(cols.user)).alias("user_id"),
        _clean_id(F.col(cols.item)).alias("item_id"),
        _time_ms(raw_df, cols.time, input_cfg.time_unit).alias("ts_ms"),
        etype.alias("event_type"),
        weight.alias("weight"),
        F.col(cols.time).cast("string").alias("time_raw"),
        malformed.alias("malformed_raw"),
    )


def with_drop_reason(events_df: DataFrame, input_cfg: InputConfig, now_ms: int,
                     window_start_ms: int, window_end_ms: int) -> DataFrame:
    """Add ``drop_reason``: a DROP_REASONS value, 'outside_window', or null to keep the row."""
    ts = F.col("ts_ms")
    checks = [
        ("malformed_line", F.col("malformed_raw").isNotNull()),
        ("null_user", F.col("user_id").isNull()),
        ("null_item", F.col("item_id").isNull()),
        ("null_time", F.col("time_raw").isNull() | (F.trim(F.col("time_raw")) == "")),
        ("unparseable_time", ts.isNull()),
        ("time_out_of_range", ts < 0),
        ("future_time", ts > F.lit(now_ms)),
    ]
    if input_cfg.columns.weight:
        checks.append(("bad_weight", F.col("weight").isNull()))
    if input_cfg.columns.event_type and input_cfg.event_types:
        checks.append(("filtered_event_type",
                       ~F.coalesce(F.col("event_type").isin(input_cfg.event_types), F.lit(False))))
    if input_cfg.columns.weight and input_cfg.min_weight is not None:
        checks.append(("below_min_weight", F.col("weight") < F.lit(input_cfg.min_weight)))
    checks.append((OUTSIDE_WINDOW, (ts < F.lit(window_start_ms)) | (ts >= F.lit(window_end_ms))))
    reason = F.lit(None).cast("string")
    for name, cond in reversed(checks):
        reason = F.when(cond, F.lit(name)).otherwise(reason)
    return events_df.withColumn("drop_reason", reason)


def drop_duplicate_events(events_df: DataFrame) -> DataFrame:
    """Remove exact duplicates of (user_id, item_id, ts_ms, event_type)."""
    return events_df.dropDuplicates(["user_id", "item_id", "ts_ms", "event_type"])


def item_stats(events_df: DataFrame, min_count: int) -> DataFrame:
    """Per item: events, distinct users, first/last seen, and whether it is admitted."""
    return (
        events_df.groupBy("item_id")
        .agg(F.count(F.lit(1)).alias("n_events"),
             F.countDistinct("user_id").alias("n_users"),
             F.timestamp_millis(F.min("ts_ms")).alias("first_seen"),
             F.timestamp_millis(F.max("ts_ms")).alias("last_seen"))
        .withColumn("admitted", F.col("n_events") >= F.lit(min_count))
        .select(*ITEM_STATS_COLS)
    )


def filter_admitted_items(events_df: DataFrame, stats_df: DataFrame) -> DataFrame:
    """Keep events of admitted items (item_id is unique in stats_df)."""
    admitted_df = stats_df.where(F.col("admitted")).select("item_id")
    return events_df.join(admitted_df, on="item_id", how="left_semi")


def with_session_id(events_df: DataFrame, gap_seconds: int) -> DataFrame:
    """Add ``session_no`` (per user, from 0) and ``is_repeat`` (same item as the event before).

    A gap strictly greater than ``gap_seconds`` starts a new session.
    """
    order = Window.partitionBy("user_id").orderBy("ts_ms", "item_id", "event_type")
    running = order.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    prev_ts = F.lag("ts_ms").over(order)
    new_session = prev_ts.isNull() | ((F.col("ts_ms") - prev_ts) > F.lit(gap_seconds * 1000))
    return (
        events_df.withColumn("is_new_session", new_session)
        .withColumn("is_repeat", ~F.col("is_new_session") & (F.col("item_id") == F.lag("item_id").over(order)))
        .withColumn("session_no", F.sum(F.col("is_new_session").cast("int")).over(running) - 1)
        .drop("is_new_session")
    )


def to_session_chunks(sessions_df: DataFrame, max_length: int) -> DataFrame:
    """One row per session chunk of at most ``max_length`` items, repeats collapsed.

    Output: SEQUENCE_COLS + ``n_repeats`` (collapsed repeats, counted on the first chunk).
    """
    event = F.struct("ts_ms", "item_id", "event_type")
    per_session = (
        sessions_df.groupBy("user_id", "session_no")
        .agg(F.sort_array(F.collect_list(F.when(~F.col("is_repeat"), event))).alias("events"),
             F.sum(F.col("is_repeat").cast("int")).alias("n_repeats"))
    )
    n_chunks = F.ceil(F.size("events") / F.lit(max_length)).cast("int")
    chunks = F.slice("events", F.col("chunk") * max_length + 1, max_length)
    return (
        per_session.select("*", F.posexplode(F.sequence(F.lit(0), n_chunks - 1)).alias("chunk", "c"))
        .withColumn("events", chunks)
        .select(
            "user_id",
            F.concat_ws("-", F.col("session_no").cast("string"), F.col("chunk").cast("string")).alias("session_id"),
            F.transform("events", lambda e: e["item_id"]).alias("items"),
            F.size("events").alias("n_items"),
            F.timestamp_millis(F.col("events")[0]["ts_ms"]).alias("start_ts"),
            F.timestamp_millis(F.element_at("events", -1)["ts_ms"]).alias("end_ts"),
            F.when(F.col("chunk") == 0, F.col("n_repeats")).otherwise(0).alias("n_repeats"),
        )
    )


def window_bounds_ms(dt: str, lookback_days: int) -> tuple[int, int]:
    """[start, end) of the lookback window in epoch ms: ``lookback_days`` days ending with dt."""
    end = _dt.datetime.combine(_dt.date.fromisoformat(dt) + _dt.timedelta(days=1),
                               _dt.time(), tzinfo=_dt.timezone.utc)
    start = end - _dt.timedelta(days=lookback_days)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def _now_ms(seq_cfg: SequencesConfig) -> int:
    if seq_cfg.now:
        now = _dt.datetime.fromisoformat(seq_cfg.now)
        now = now if now.tzinfo else now.replace(tzinfo=_dt.timezone.utc)
    else:
        now = _dt.datetime.now(_dt.timezone.utc)
    return int(now.timestamp() * 1000) + seq_cfg.future_tolerance_seconds * 1000


@dataclass
class SequencesResult:
    sequences_df: DataFrame
    item_stats_df: DataFrame
    counts: dict = field(default_factory=dict)


def build_sequences(raw_df: DataFrame, input_cfg: InputConfig, seq_cfg: SequencesConfig,
                    dt: str) -> SequencesResult:
    """The whole step on one raw log: counts every drop and checks the result is not empty.

    Runs three small actions (drop counts, item counts, chunk counts) on persisted
    intermediates; the returned frames are persisted and ready to write.
    """
    start_ms, end_ms = window_bounds_ms(dt, seq_cfg.lookback_days)
    classified_df = (
        raw_df.transform(select_events, input_cfg)
        .transform(with_drop_reason, input_cfg, _now_ms(seq_cfg), start_ms, end_ms)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    by_reason = {r["drop_reason"]: r["count"] for r in classified_df.groupBy("drop_reason").count().collect()}
    counts = {"input_rows": sum(by_reason.values()), "in_window": by_reason.pop(None, 0),
              "outside_window": by_reason.pop(OUTSIDE_WINDOW, 0),
              "dropped": {r: by_reason.get(r, 0) for r in DROP_REASONS}}
    if counts["input_rows"] == 0:
        raise SequenceInputError("the input log has no rows")
    log.info("read %d rows; dropped by reason: %s; outside the window: %d",
             counts["input_rows"], _fmt(counts["dropped"]), counts["outside_window"])
    if counts["dropped"]["malformed_line"]:
        log.warning("%d malformed_line rows dropped (more or fewer fields than the header), e.g. %s",
                    counts["dropped"]["malformed_line"], "; ".join(malformed_sample(classified_df)))
    hint = time_unit_hint(classified_df, counts, input_cfg)
    if hint:
        log.warning("%s", hint)
    if counts["in_window"] == 0:
        raise EmptyInputError(
            f"no valid events for dt={dt} in the {seq_cfg.lookback_days}-day window "
            f"(rows: {counts['input_rows']}, dropped: {_fmt(counts['dropped'])}, "
            f"outside window: {counts['outside_window']})" + (f"; {hint}" if hint else ""))

    events_df = classified_df.where(F.col("drop_reason").isNull()).select(*EVENT_COLS).transform(drop_duplicate_events)
    stats_df = item_stats(events_df, seq_cfg.min_count).persist(StorageLevel.MEMORY_AND_DISK)
    item_counts = stats_df.agg(F.count(F.lit(1)).alias("items"), F.sum("n_events").alias("events"),
                               F.sum(F.col("admitted").cast("int")).alias("admitted"),
                               F.sum(F.when(~F.col("admitted"), F.col("n_events"))).alias("removed_events"),
                               ).first()
    counts["dropped"]["duplicate"] = counts["in_window"] - item_counts["events"]
    counts["items"] = {"seen": item_counts["items"], "admitted": item_counts["admitted"],
                       "removed": item_counts["items"] - item_counts["admitted"],
                       "events_removed": item_counts["removed_events"] or 0}
    log.info("duplicates dropped: %d; items seen %d, admitted %d, removed %d (min_count=%d, %d events)",
             counts["dropped"]["duplicate"], item_counts["items"], item_counts["admitted"],
             counts["items"]["removed"], seq_cfg.min_count, counts["items"]["events_removed"])
    if not item_counts["admitted"]:
        raise EmptyInputError(f"no item has at least min_count={seq_cfg.min_count} events for dt={dt}")

    chunks_df = (
        events_df.transform(filter_admitted_items, stats_df)
        .transform(with_session_id, seq_cfg.session_gap_seconds)
        .transform(to_session_chunks, seq_cfg.max_session_length)
        .withColumn("keep", F.col("n_items") >= F.lit(seq_cfg.min_sequence_length))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    c = chunks_df.agg(
        F.count(F.lit(1)).alias("chunks"), F.sum("n_repeats").alias("repeats"),
        F.sum(F.col("keep").cast("int")).alias("kept"),
        F.sum(F.when(F.col("keep"), F.col("n_items"))).alias("kept_items"),
        F.sum(F.when(~F.col("keep"), F.col("n_items"))).alias("short_items"),
        F.sum(F.when(F.col("session_id").endswith("-1"), 1)).alias("split"),
    ).first()
    counts["sequences"] = {"written": c["kept"] or 0, "tokens": c["kept_items"] or 0,
                           "repeats_collapsed": c["repeats"] or 0, "sessions_split": c["split"] or 0,
                           "short_dropped": (c["chunks"] or 0) - (c["kept"] or 0),
                           "short_dropped_items": c["short_items"] or 0}
    log.info("sequences: %s", _fmt(counts["sequences"]))
    if not counts["sequences"]["written"]:
        raise EmptyInputError(
            f"no sequence of at least {seq_cfg.min_sequence_length} items for dt={dt} "
            f"({counts['sequences']['short_dropped']} shorter ones dropped)")
    classified_df.unpersist()
    sequences_df = chunks_df.where(F.col("keep")).select(*SEQUENCE_COLS)
    return SequencesResult(sequences_df, stats_df, counts)


def malformed_sample(classified_df: DataFrame) -> list[str]:
    """A few malformed lines as Python literals (newlines visible), each cut short."""
    rows = (classified_df.where(F.col("drop_reason") == "malformed_line")
            .select("malformed_raw").limit(MALFORMED_SAMPLE_LINES).collect())
    cut = MALFORMED_SAMPLE_CHARS
    return [repr(r[0][:cut]) + ("..." if len(r[0]) > cut else "") for r in rows]


def time_unit_hint(classified_df: DataFrame, counts: dict, input_cfg: InputConfig) -> str | None:
    """A hint naming input.time_unit when one time reason covers more than half the rows.

    Shows the range of those rows' raw time values (by number when they are numbers).
    outside_window counts only when no row is left: a long log with a short window is normal.
    """
    n_by_reason = {**counts["dropped"], OUTSIDE_WINDOW: counts["outside_window"]}
    candidates = TIME_REASONS + ([OUTSIDE_WINDOW] if counts["in_window"] == 0 else [])
    reason = next((r for r in candidates if 2 * n_by_reason[r] > counts["input_rows"]), None)
    if reason is None:
        return None
    raw = F.col("time_raw")
    number = raw.try_cast("double")
    r = (classified_df.where(F.col("drop_reason") == reason)
         .agg(F.min_by(raw, number), F.max_by(raw, number), F.min(raw), F.max(raw)).first())
    low, high = (r[0], r[1]) if r[0] is not None else (r[2], r[3])
    return (f"{n_by_reason[reason]} of {counts['input_rows']} rows are {reason}; their raw "
            f"{input_cfg.columns.time!r} values range from {low!r} to {high!r}, read with "
            f"input.time_unit={input_cfg.time_unit!r} (s: epoch seconds, ms: epoch milliseconds, "
            "timestamp: a date and time); check input.time_unit")


def _fmt(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())
